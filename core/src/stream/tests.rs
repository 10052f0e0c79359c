//! The stream layer with a framer that knows nothing of FTP: bytes between `<` and `>` are held and
//! the bracketed unit replaced by its length in decimal digits. What FTP's framing does on top is
//! tested in `alg::ftp::framer`.

use super::*;

/// Holds `<...>` units and splices each over with the count of its bytes (a length-changing edit).
#[derive(Default)]
struct Brackets {
    open: Option<SeqNum>,
    seen_begin: Vec<Start>,
    gaps: Vec<bool>,
}

impl Framer for Brackets {
    fn begin(&mut self, _: Dir, start: Start) {
        self.seen_begin.push(start);
    }
    fn feed(&mut self, _: Dir, at: SeqNum, data: &[u8], emit: &mut Emit<'_>) {
        for (i, &b) in data.iter().enumerate() {
            match (self.open, b) {
                (None, b'<') if emit.may_edit() => {
                    self.open = Some(at.add(i as u32));
                    emit.hold(b);
                }
                (Some(start), b'>') => {
                    emit.hold(b);
                    let n = emit.held().len();
                    emit.splice(start, 0..n, n.to_string().as_bytes());
                    self.open = None;
                }
                (Some(_), _) => emit.hold(b),
                (None, _) => emit.pass_byte(b),
            }
        }
    }
    fn gap(&mut self, _: Dir, cut: bool, _: &mut Tally) {
        self.gaps.push(cut);
        self.open = None;
    }
    fn released(&mut self, _: Dir) {
        self.open = None;
    }
}

const D: Dir = Dir::Original;
const T0: Instant = Instant::ZERO;

fn send(s: &mut StreamEdit, f: &mut Brackets, seq: u32, data: &[u8]) -> (u32, Vec<u8>) {
    let mut t = Tally::default();
    let o = s
        .segment(D, Incoming { seq: SeqNum::new(seq), syn: false, fin: false, payload: data }, T0, f, &mut t)
        .unwrap()
        .unwrap();
    (o.seq.get(), o.payload)
}

fn synced() -> (StreamEdit, Brackets) {
    let mut s = StreamEdit::new([Edit::Rewrite, Edit::Observe]);
    let mut f = Brackets::default();
    let mut t = Tally::default();
    s.segment(D, Incoming { seq: SeqNum::new(99), syn: true, fin: false, payload: b"" }, T0, &mut f, &mut t)
        .unwrap();
    assert_eq!(f.seen_begin, [Start::Syn]);
    (s, f)
}

#[test]
fn a_unit_split_over_segments_is_held_then_spliced_and_later_numbers_shift() {
    let (mut s, mut f) = synced();
    assert_eq!(send(&mut s, &mut f, 100, b"ab<c"), (100, b"ab".to_vec()));
    assert_eq!(s.held_len(D), 2);
    assert_eq!(send(&mut s, &mut f, 104, b"dddd>e"), (102, b"7e".to_vec()));
    // Seven bytes became one: the next byte (110) is 104 for the receiver, and its acknowledgement of
    // 104 means 110 to the sender.
    assert_eq!(s.map_seq(D, SeqNum::new(110)), SeqNum::new(104));
    assert_eq!(s.unmap_ack(D, SeqNum::new(104)), SeqNum::new(110));
}

#[test]
fn a_retransmission_is_rebuilt_from_history_and_the_framer_never_sees_it_again() {
    let (mut s, mut f) = synced();
    send(&mut s, &mut f, 100, b"x<yy>z");
    // The sender repacketises: a retransmission from the middle of the unit is widened to all of it.
    assert_eq!(send(&mut s, &mut f, 102, b"yy>z"), (101, b"4z".to_vec()));
    let mut t = Tally::default();
    let o = s
        .segment(
            D,
            Incoming { seq: SeqNum::new(100), syn: false, fin: false, payload: b"x<yy>z" },
            T0,
            &mut f,
            &mut t,
        )
        .unwrap();
    assert_eq!(o.unwrap().payload, b"x4z".to_vec());
    assert_eq!(t.retransmits_rebuilt, 1);
}

#[test]
fn a_segment_past_a_gap_is_refused_and_an_acknowledged_gap_is_jumped() {
    let (mut s, mut f) = synced();
    send(&mut s, &mut f, 100, b"ab<c");
    let mut t = Tally::default();
    let r = s.segment(
        D,
        Incoming { seq: SeqNum::new(110), syn: false, fin: false, payload: b"q" },
        T0,
        &mut f,
        &mut t,
    );
    assert_eq!(r, Err(DropReason::AlgOutOfOrder));
    // The receiver acknowledged 110: bytes 104..110 went another way, and so did the held "<c".
    assert!(s.on_ack(D, SeqNum::new(110), &mut f, &mut t));
    assert_eq!((t.gaps, f.gaps.as_slice(), s.held_len(D)), (1, &[true][..], 0));
    assert_eq!(send(&mut s, &mut f, 110, b"q"), (110, b"q".to_vec()));
}

#[test]
fn held_bytes_leave_as_they_were_past_the_hold_limit_with_their_template() {
    let (mut s, mut f) = synced();
    send(&mut s, &mut f, 100, b"ab<c");
    s.keep_template(D, &[0x45; 40]);
    let limit = core::time::Duration::from_secs(5);
    assert_eq!(s.hold_deadline(D, limit), Some(T0 + limit));
    let mut t = Tally::default();
    let r = s.release_held(D, &mut f, &mut t).unwrap();
    assert_eq!((r.seq.get(), r.bytes.as_slice(), r.template.len()), (102, &b"<c"[..], 40));
    assert_eq!((t.hold_timeouts, s.hold_deadline(D, limit)), (1, None));
    assert!(s.release_held(D, &mut f, &mut t).is_none());
}

#[test]
fn an_observed_direction_is_read_but_never_changed() {
    let mut s = StreamEdit::new([Edit::Observe, Edit::Observe]);
    let mut f = Brackets::default();
    let mut t = Tally::default();
    let r = s
        .segment(
            D,
            Incoming { seq: SeqNum::new(5000), syn: false, fin: false, payload: b"a<b>c" },
            T0,
            &mut f,
            &mut t,
        )
        .unwrap();
    assert!(r.is_none() && s.seq_map(D).is_identity());
    assert_eq!(f.seen_begin, [Start::Pickup]);
}

#[test]
fn a_span_outside_the_held_bytes_is_not_applied() {
    let mut held = b"<ab>".to_vec();
    let (mut out, mut map, mut tally) = (Vec::new(), SeqMap::new(), Tally::default());
    let mut emit =
        Emit { out: &mut out, held: &mut held, map: &mut map, edit: Edit::Rewrite, tally: &mut tally };
    assert!(!emit.splice(SeqNum::new(1), 2..9, b"x"));
    assert_eq!((out.as_slice(), map.is_identity()), (&b"<ab>"[..], true));
}
