//! The shape every operation shares: ask the rules, then answer now or after a delay.

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Injection, Resume, Shared};

/// Ask the policy about `$op`; do `$body` now or, after an injected delay, on a delay thread
/// (with owned copies of the captured variables).
macro_rules! run {
    ($sh:ident, $req:ident, $op:expr, $path:ident, $reply:ident, ($($cap:ident),*), |$inj:ident, $r:ident| $body:expr) => {{
        let reply_type = reply_type(&$reply);
        let resume = || {
            $( let $cap = $cap.to_owned(); )*
            resume_with::<_, _>(reply_type, move |$sh: &Arc<Shared>, $inj: Injection, $r| {
                let _ = (&$sh, &$inj);
                // The body is written once for borrowed and owned captures.
                #[allow(clippy::needless_borrow, clippy::borrow_deref_ref)]
                let () = $body;
            })
        };
        if let Some(($inj, $r)) = $sh.faults(super::interrupts::Requester::of($req), $op, $path.as_deref(), $reply, resume) {
            let _ = &$inj;
            #[allow(clippy::needless_borrow, clippy::borrow_deref_ref)]
            let () = $body;
        }
    }};
}

pub(super) fn reply_type<R>(_: &R) -> PhantomData<R> {
    PhantomData
}

pub(super) fn resume_with<R, F>(_: PhantomData<R>, f: F) -> Resume<R>
where
    F: FnOnce(&Arc<Shared>, Injection, R) + Send + 'static,
{
    Box::new(f)
}

/// A descriptor on an inode's original, or reply with the error.
macro_rules! inode_fd {
    ($reply:ident, $inode:expr) => {
        match $inode.fd() {
            Ok(fd) => fd,
            Err(e) => return $reply.error(e.into()),
        }
    };
}

macro_rules! tri {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e.into()),
        }
    };
}
