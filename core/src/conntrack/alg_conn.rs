//! The ALG state a connection carries: the generic stream-editing state and the ALG's own, side by
//! side.
//!
//! Owns: the pairing of one connection's [`StreamEdit`] (bytes, holds, sequence maps: `crate::stream`)
//! with its FTP session (what the lines mean: `crate::alg::ftp`), and the few calls that need both.
//! Must not: touch packets (the engine's ALG hook does) or hold anything of its own: the two halves are
//! separate fields so the engine can borrow them apart.

use crate::alg::ftp::FtpSession;
use crate::alg::AlgCtx;
use crate::flow::Dir;
use crate::metrics::DropReason;
use crate::stream::{Incoming, Released, SegmentOut, StreamEdit, Tally};
use crate::wire::SeqNum;

#[derive(Debug, Clone)]
pub struct AlgConn {
    pub stream: StreamEdit,
    pub ftp: FtpSession,
}

impl AlgConn {
    /// The stream layer edits the directions the session says it may rewrite.
    pub fn new(ftp: FtpSession) -> AlgConn {
        AlgConn { stream: StreamEdit::new(ftp.edits()), ftp }
    }

    /// A segment travelling in `dir`: see [`StreamEdit::segment`].
    pub fn segment(
        &mut self,
        dir: Dir,
        seg: Incoming<'_>,
        ctx: &mut AlgCtx<'_>,
        tally: &mut Tally,
    ) -> Result<Option<SegmentOut>, DropReason> {
        let now = ctx.now;
        self.stream.segment(dir, seg, now, &mut self.ftp.framer(ctx), tally)
    }

    /// The receiver of `dir` acknowledged `acked` (sender space, within the window): see
    /// [`StreamEdit::on_ack`]. After a gap the session forgets the commands awaiting replies.
    pub fn on_ack(&mut self, dir: Dir, acked: SeqNum, ctx: &mut AlgCtx<'_>, tally: &mut Tally) {
        if self.stream.on_ack(dir, acked, &mut self.ftp.framer(ctx), tally) {
            self.ftp.forget_pending();
        }
    }

    /// Bytes held in `dir` leave as they were: see [`StreamEdit::release_held`].
    pub fn release_held(&mut self, dir: Dir, ctx: &mut AlgCtx<'_>, tally: &mut Tally) -> Option<Released> {
        self.stream.release_held(dir, &mut self.ftp.framer(ctx), tally)
    }

    /// A human summary for `show flows`.
    pub fn describe(&self) -> String {
        self.ftp.describe(&self.stream)
    }
}
