//! Directory listings: readdir, and readdirplus (each entry an implicit lookup).

use std::time::Duration;

use fuser::{Errno, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::attr::{apply_override, dot_attr, kind_of_dtype};
use super::handle::Handle;
use super::{Method, MethodSet, Shared};

impl Shared {
    pub(super) fn do_readdir(&self, fh: u64, offset: u64, mut reply: ReplyDirectory) {
        let h = tri!(reply, self.dir(fh));
        let Handle::Dir(d) = &*h else {
            return reply.error(Errno::EBADF);
        };
        let offset = tri!(reply, i64::try_from(offset).map_err(|_| Errno::EINVAL));
        let mut stream = d.stream.lock();
        let res = stream.read_from(offset, |e| {
            !reply.add(
                INodeNo(e.ino),
                e.next_offset as u64,
                kind_of_dtype(e.kind),
                e.name,
            )
        });
        drop(stream);
        tri!(reply, res);
        reply.ok();
    }

    pub(super) fn do_readdirplus(&self, fh: u64, offset: u64, mut reply: ReplyDirectoryPlus) {
        let h = tri!(reply, self.dir(fh));
        let Handle::Dir(d) = &*h else {
            return reply.error(Errno::EBADF);
        };
        let offset = tri!(reply, i64::try_from(offset).map_err(|_| Errno::EINVAL));
        let dir = &d.inode;
        let _epoch = self.epoch.read_recursive();
        let mut stream = d.stream.lock();
        let res = stream.read_from(offset, |e| {
            let next = e.next_offset as u64;
            if e.name == "." || e.name == ".." {
                // The kernel takes no reference on these.
                let attr = dot_attr(dir.nodeid);
                return !reply.add(
                    INodeNo(dir.nodeid),
                    next,
                    e.name,
                    &Duration::ZERO,
                    &attr,
                    Generation(0),
                );
            }
            let Ok((child, mut attr)) = self.lookup_child(dir, e.name) else {
                // Gone since getdents: skip it.
                return true;
            };
            let path = self.rule_path(|| child.path());
            // Each entry is an implicit lookup: attribute overrides apply. Latency and
            // errors do not (the directory listing itself is READDIR's).
            if let Some(p) = path.as_deref()
                && self.rules.may_match(p, MethodSet::from(Method::Lookup))
                && let Some(o) = self.rules.evaluate(Method::Lookup, p).attr
            {
                apply_override(&o, &mut attr, true);
            }
            let ttl = self.ttl(path.as_deref());
            let full = reply.add(
                INodeNo(child.nodeid),
                next,
                e.name,
                &ttl,
                &attr,
                Generation(0),
            );
            if full {
                self.inodes.forget(child.nodeid, 1);
            }
            !full
        });
        drop(stream);
        tri!(reply, res);
        reply.ok();
    }
}
