//! The ALG state a connection carries: the generic stream-editing state and the ALG's own, side by
//! side.
//!
//! Owns: the pairing of one connection's [`StreamEdit`] (bytes, holds, sequence maps: `crate::stream`)
//! with the state of the ALG that watches it ([`Watched`]: today FTP's session, `crate::alg::ftp`), and
//! the few calls that need both.
//! Must not: touch packets (the engine's ALG hook does) or hold anything of its own: the two halves are
//! separate fields so the engine can borrow them apart.

use crate::alg::ftp::FtpSession;
use crate::alg::{AlgCtx, Watched};
use crate::flow::Dir;
use crate::metrics::DropReason;
use crate::stream::{Incoming, Released, SegmentOut, StreamEdit, Tally};
use crate::wire::SeqNum;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AlgConn {
    pub stream: StreamEdit,
    pub app: Watched,
}

impl AlgConn {
    /// The stream layer edits the directions the ALG says it may rewrite.
    pub fn new(app: Watched) -> AlgConn {
        let Watched::Ftp(ftp) = &app;
        AlgConn { stream: StreamEdit::new(ftp.edits()), app }
    }

    /// The FTP session, when FTP is what this connection speaks.
    pub fn ftp(&self) -> Option<&FtpSession> {
        let Watched::Ftp(ftp) = &self.app;
        Some(ftp)
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
        let Watched::Ftp(ftp) = &mut self.app;
        self.stream.segment(dir, seg, now, &mut ftp.framer(ctx), tally)
    }

    /// The receiver of `dir` acknowledged `acked` (sender space, within the window): see
    /// [`StreamEdit::on_ack`]. After a gap the session forgets the commands awaiting replies.
    pub fn on_ack(&mut self, dir: Dir, acked: SeqNum, ctx: &mut AlgCtx<'_>, tally: &mut Tally) {
        let Watched::Ftp(ftp) = &mut self.app;
        if self.stream.on_ack(dir, acked, &mut ftp.framer(ctx), tally) {
            ftp.forget_pending();
        }
    }

    /// Bytes held in `dir` leave as they were: see [`StreamEdit::release_held`].
    pub fn release_held(&mut self, dir: Dir, ctx: &mut AlgCtx<'_>, tally: &mut Tally) -> Option<Released> {
        let Watched::Ftp(ftp) = &mut self.app;
        self.stream.release_held(dir, &mut ftp.framer(ctx), tally)
    }

    /// The connection is gone: so are the pinholes its ALG opened that no data connection used.
    pub fn close(&mut self, ctx: &mut AlgCtx<'_>) {
        let Watched::Ftp(ftp) = &mut self.app;
        ftp.close(ctx);
    }

    /// A human summary for `show flows`.
    pub fn describe(&self) -> String {
        let Watched::Ftp(ftp) = &self.app;
        ftp.describe(&self.stream)
    }
}
