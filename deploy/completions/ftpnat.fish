# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ftpnat_global_optspecs
    string join \n log-format= h/help V/version
end

function __fish_ftpnat_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ftpnat_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ftpnat_using_subcommand
    set -l cmd (__fish_ftpnat_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ftpnat -n "__fish_ftpnat_needs_command" -l log-format -d 'Log line format on stderr (the filter comes from RUST_LOG, default `ftpnat=info`) [default: text]' -r -f -a "text\t''
json\t''"
complete -c ftpnat -n "__fish_ftpnat_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ftpnat -n "__fish_ftpnat_needs_command" -s V -l version -d 'Print version'
complete -c ftpnat -n "__fish_ftpnat_needs_command" -f -a "run" -d 'Route and translate between a LAN and a WAN TUN device until SIGINT/SIGTERM (SIGHUP reloads the --config file)'
complete -c ftpnat -n "__fish_ftpnat_needs_command" -f -a "show" -d 'Show a running gateway\'s flows, pinholes or counters (through its --control-socket)'
complete -c ftpnat -n "__fish_ftpnat_needs_command" -f -a "events" -d 'Follow a running gateway\'s events live, like `conntrack -E`: flows new/destroyed, ALG rewrites, pinholes created/used/expired, refusals'
complete -c ftpnat -n "__fish_ftpnat_needs_command" -f -a "replay" -d 'Replay a pcap/pcapng capture through the engine (stable interface, see README)'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l config -d 'Read settings from this TOML file (keys are these flags\' names; flags given here override it)' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l lan-tun -d 'TUN device facing the inside hosts; created if absent, else attached to as it is [required]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l wan-tun -d 'TUN device facing the outside; created if absent, else attached to as it is [required]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l inside -d 'Inside prefix whose sources are translated (repeatable) [required]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l public-ip -d 'The gateway\'s public address: translated sources, destination of inbound traffic [required]. Repeatable: every address given joins the pool (see --public-pool); the first is the gateway\'s own (forwards without an address, ICMP errors it sends outside)' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l forward -d 'Static port forward PROTO:[PUBLICIP:]PUBLICPORT=INSIDEIP:PORT, e.g. tcp:2121=10.0.0.2:21, on the first --public-ip unless it names a pool address (repeatable). With --nat64-prefix the inside host may be an --inside6 IPv6 host, bracketed: tcp:2121=[2001:db8::10]:21' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l lan-ip -d 'The gateway\'s own LAN address, source of ICMP errors sent inside [default: first host of the first --inside prefix]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l port-range -d 'Outside ports for new mappings when the inside port is taken [default: 1024-65535]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l max-flows -d 'Connection table bound; new flows beyond it are refused and counted [default: 262144]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l max-flows-per-host -d 'Flows (table entries) one inside host may hold, whatever ports they use [default: 16384]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l max-ports-per-host -d 'Public ports (mappings) one inside host may hold per protocol: a number, or a share of --port-range like 25% [default: 6.25%, 1/16 of the range (4032 of 1024-65535), at least 64]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l lan-mtu -d 'Egress MTU towards the LAN (also set on a LAN device ftpnat creates) [default: 1500]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l wan-mtu -d 'Egress MTU towards the WAN (also set on a WAN device ftpnat creates) [default: 1500]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l ftp-port -d 'Server port of FTP control connections (repeatable; replaces the default 21)' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l ftp-pinhole-timeout -d 'How long an FTP data-connection pinhole waits for its connection [default: 60s]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l ftp-max-pinholes -d 'Outstanding pinholes per FTP control connection [default: 8]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l tcp-established-timeout -d 'Idle timeout of an established TCP connection [default: 7440s = 2 h 4 min, RFC 5382 REQ-5]. Every DUR is seconds or a number with a unit: 90, 1.5, 500ms, 2m, 1h' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l tcp-transitory-timeout -d 'Idle timeout of an opening or closing TCP connection [default: 4m, RFC 5382 REQ-5]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l udp-timeout -d 'Idle timeout of a UDP mapping [default: 5m; RFC 4787 REQ-5 asks at least 2m]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l icmp-timeout -d 'Idle timeout of an ICMP echo mapping [default: 60s]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l tcp-unreplied-timeout -d 'Idle timeout of a TCP connection whose other side never answered (a SYN, a connection picked up mid-stream) [default: 60s]; the long timeouts start once both sides have spoken' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l udp-unreplied-timeout -d 'Idle timeout of a UDP mapping nobody answered [default: 30s]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l workers -d 'Worker threads, each with its own queue of both TUN devices (IFF_MULTI_QUEUE, steered by an eBPF program) and its own engine: table, slice of the port range, pinholes [default: the number of CPUs, or 1 when the configuration has what several workers do not run yet]. One worker, with a warning, when the devices or the kernel cannot do it; 1 is the single loop' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l control-socket -d 'Serve `ftpnat show`/`ftpnat events` on this Unix socket (created with mode 0600)' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l state-file -d 'Keep the state across a restart: at SIGTERM/SIGINT write every flow, mapping, pinhole and FTP rewrite in force to PATH (atomically); at start load PATH if it is there and matches the configuration, then delete it. A file that does not match or is damaged is set aside as PATH.rejected with a warning, and the start is empty (docs/STATE.md)' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l metrics-listen -d 'Serve Prometheus metrics over HTTP at ADDR:PORT/metrics, e.g. 127.0.0.1:9810' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l capture -d 'Write every packet ftpnat sends to this pcapng file (interface 0 = LAN, 1 = WAN)' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l capture-max-bytes -d 'Rotate the capture file before it grows past this size (bytes, or 64K/100M/1G) [default: 64M]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l capture-files -d 'Capture files kept, the current one included: FILE, FILE.1, ... [default: 4]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l nat64-prefix -d 'Stateful NAT64 (RFC 6146): IPv6 LAN packets to an address in this prefix (RFC 6052: /32, /40, /48, /56, /64 or /96; 64:ff9b::/96 is the well-known one) leave the WAN as IPv4 from --public-ip [default: none, IPv6 is dropped]. Needs --inside6' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l inside6 -d 'IPv6 source prefix allowed to use --nat64-prefix (repeatable); the gateway\'s own IPv6 address is the first host of the first one' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l public-pool -d 'More public addresses for the pool: a prefix (its host addresses) or FIRST-LAST (repeatable). Inside hosts are spread over the pool by a hash of their address; all of one host\'s connections, FTP data connections included, use one address (paired pooling)' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l port-block-size -d 'Port-block allocation: a host gets blocks of N public ports (on its first connection, and another when its blocks are full), logged once per block instead of once per connection' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l port-blocks-per-host -d 'Port blocks one inside host may hold at once [default: 8]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l port-block-hold -d 'How long a block whose last connection ended stays with its host before it returns to the pool [default: 120s]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l ipfix-collector -d 'Send NAT allocation records (port blocks, exhaustion, quotas; sessions with --nat-log-sessions) as IPFIX (RFC 7011, RFC 8158 events) over UDP to this collector' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l ipfix-template-refresh -d 'How often the IPFIX templates are sent again [default: 60s]' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l syslog -d 'Send the same NAT allocation records as RFC 5424 syslog to udp:IP:PORT or unix:/PATH' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l log-format -d 'Log line format on stderr (the filter comes from RUST_LOG, default `ftpnat=info`) [default: text]' -r -f -a "text\t''
json\t''"
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l no-ftp-alg -d 'Turn the FTP ALG off: FTP control traffic is translated like any TCP'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l ftp-allow-low-ports -d 'Accept PORT/EPRT naming a port below 1024 (refused by default, RFC 2577 section 3)'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l forward-only -d 'Route without translating (benchmark ceiling): addresses and ports are left alone'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l no-offload -d 'Plain TUN I/O, one packet per read/write, instead of segmentation offload (IFF_VNET_HDR with TSO/USO and checksum offload, used when the kernel has it)'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l deterministic -d 'Deterministic NAT (RFC 7422): each inside address owns a computed public address and port range (--port-block-size ports, default: as many as fit); `ftpnat show mapping` computes it'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -l nat-log-sessions -d 'Log one record per connection (NAT44 session create/delete) as well as the blocks'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand run" -s h -l help -d 'Print help'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -l control-socket -d 'The running gateway\'s control socket' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -l addr -d 'Only what involves this address (inside, public or remote)' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -l port -d 'Only what involves this port (inside, public or remote)' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -l proto -d 'Only this protocol' -r -f -a "tcp\t''
udp\t''
icmp\t''"
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -l limit -d 'flows/pinholes: at most N entries, and where to go on when more may follow (without it the whole listing is shown, fetched 1000 at a time)' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -l cursor -d 'flows/pinholes: start where a previous `--limit` listing said to go on' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -l log-format -d 'Log line format on stderr (the filter comes from RUST_LOG, default `ftpnat=info`) [default: text]' -r -f -a "text\t''
json\t''"
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -l json -d 'JSON instead of a table (`show`: one document; `events`: one object per line)'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand events" -l control-socket -d 'The running gateway\'s control socket' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand events" -l addr -d 'Only what involves this address (inside, public or remote)' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand events" -l port -d 'Only what involves this port (inside, public or remote)' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand events" -l proto -d 'Only this protocol' -r -f -a "tcp\t''
udp\t''
icmp\t''"
complete -c ftpnat -n "__fish_ftpnat_using_subcommand events" -l log-format -d 'Log line format on stderr (the filter comes from RUST_LOG, default `ftpnat=info`) [default: text]' -r -f -a "text\t''
json\t''"
complete -c ftpnat -n "__fish_ftpnat_using_subcommand events" -l json -d 'JSON instead of a table (`show`: one document; `events`: one object per line)'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand events" -s h -l help -d 'Print help'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l inside -d 'The inside network; repeat for several. IPv4 prefixes are translated, IPv6 prefixes only pick sides. A bare address means that one host' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l public-ip -d 'The gateway\'s outside address' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l forward -d 'Static port forward, e.g. tcp:21=10.0.0.2:21 for an inside FTP server; repeatable' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l ftp-port -d 'Port the FTP server listens on (for a forwarded inside server: its inside port); repeatable' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l lan-out -d 'Where the packets the gateway emits towards the LAN are written' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l wan-out -d 'Where the packets the gateway emits towards the WAN are written' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l summary -d 'Write the summary JSON here (default: standard output)' -r -F
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l nat64-prefix -d 'NAT64 (README "NAT64"): IPv6 packets from an IPv6 --inside prefix to this RFC 6052 prefix go through the gateway\'s NAT64; recorded IPv6 answers are emulated as the IPv4 server\'s' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l workers -d 'Replay with N engines on N threads, each packet to the engine the gateway\'s `--workers N` would give it (each engine hands out its own slice of the ports). The outputs depend on N only, never on the threads\' timing; 1 (the default) is the one-engine replay' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l restart-every -d 'A test of `ftpnat run --state-file`: every N frames, save the engine\'s state and continue with an engine restored from it. The outputs must not change' -r
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l log-format -d 'Log line format on stderr (the filter comes from RUST_LOG, default `ftpnat=info`) [default: text]' -r -f -a "text\t''
json\t''"
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l keep-link-layer -d 'Keep the input\'s link-layer framing instead of writing raw IP (LINKTYPE_RAW)'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -l trust-input-checksums -d 'Feed input checksums as they are instead of repairing wrong ones'
complete -c ftpnat -n "__fish_ftpnat_using_subcommand replay" -s h -l help -d 'Print help'
