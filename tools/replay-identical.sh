#!/bin/sh
# Replays every committed case (tests/pcap/*/ with its args) and every capture of the shared corpus
# (three --inside splits each) with two ftpnat binaries, and compares the outputs byte for byte:
# the LAN pcap, the WAN pcap and the summary JSON. A refactoring that must not change meaning
# (issue 13) shows here as "0 differ".
#
#   tools/replay-identical.sh OLD_FTPNAT NEW_FTPNAT [CORPUS_DIR]
#
# OLD_FTPNAT is typically a release build of the base commit (git worktree add /tmp/base <commit>
# && cargo build --release there), NEW_FTPNAT target/release/ftpnat. CORPUS_DIR defaults to
# ../shared/corpus (as tests/replay_corpus.rs finds it). Prints one line per run and a total;
# exits 1 if any output differs or a run's exit status differs.
set -u
old=$1 new=$2 corpus=${3:-../shared/corpus}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
runs=0 same=0 differ=0

# run NAME INPUT ARGS...: replays INPUT with both binaries and compares.
run() {
    name=$1 input=$2
    shift 2
    for which in old new; do
        bin=$old
        [ "$which" = new ] && bin=$new
        mkdir -p "$work/$which"
        "$bin" replay "$@" --lan-out "$work/$which/lan.pcap" --wan-out "$work/$which/wan.pcap" \
            --summary "$work/$which/summary.json" "$input" >/dev/null 2>&1
        echo $? >"$work/$which/status"
    done
    runs=$((runs + 1))
    a=$(cd "$work/old" && sha256sum status lan.pcap wan.pcap summary.json 2>&1)
    b=$(cd "$work/new" && sha256sum status lan.pcap wan.pcap summary.json 2>&1)
    if [ "$a" = "$b" ]; then
        same=$((same + 1))
        echo "same    $name (exit $(cat "$work/new/status"), LAN $(wc -c <"$work/new/lan.pcap" 2>/dev/null || echo -) B, WAN $(wc -c <"$work/new/wan.pcap" 2>/dev/null || echo -) B)"
    else
        differ=$((differ + 1))
        echo "DIFFERS $name"
        printf '%s\n--- new\n%s\n' "$a" "$b" | sed 's/^/    /'
    fi
    rm -rf "$work/old" "$work/new"
}

for case in "$root"/tests/pcap/*/; do
    [ -f "$case/args" ] || continue
    # args: one argument a line, the first the input file's name in the case folder.
    set --
    first=
    while IFS= read -r a; do
        if [ -z "$first" ]; then first=$a; else set -- "$@" "$a"; fi
    done <"$case/args"
    run "case:$(basename "$case")" "$case/$first" "$@"
done

if [ -d "$corpus" ]; then
    find "$corpus" -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.pcap.gz' \) | sort >"$work/list"
    while IFS= read -r f; do
        rel=${f#"$corpus"/}
        run "corpus:$rel:private-inside" "$f" --inside 10.0.0.0/8 --inside 172.16.0.0/12 \
            --inside 192.168.0.0/16 --inside 127.0.0.0/8 --public-ip 203.0.113.1
        run "corpus:$rel:low-half-inside" "$f" --inside 0.0.0.0/1 --public-ip 203.0.113.1
        run "corpus:$rel:high-half-inside" "$f" --inside 128.0.0.0/1 --public-ip 100.64.0.1
    done <"$work/list"
else
    echo "no corpus at $corpus: committed cases only"
fi

echo "runs $runs: $same identical, $differ differ"
[ "$differ" -eq 0 ]
