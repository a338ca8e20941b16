//! Names in directories: lookups, entries of newly made files, renames.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::ReplyEmpty;
use fuser::ReplyEntry;
use nix::fcntl::AtFlags;

use super::attr::key_of;
use super::handle::Handle;
use super::inode::Inode;
use super::{Injection, Shared, errno};

impl Shared {
    pub(super) fn do_lookup(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        path: Option<&Path>,
        inj: &Injection,
        reply: ReplyEntry,
    ) {
        let (_, attr) = tri!(reply, self.lookup_child(parent, name));
        self.reply_entry(reply, attr, path, inj);
    }

    /// Reply to a creating operation with the new entry.
    pub(super) fn reply_new_entry(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        path: Option<&Path>,
        inj: &Injection,
        reply: ReplyEntry,
    ) {
        self.do_lookup(parent, name, path, inj, reply);
    }

    /// The rule path of an open handle (`None` when there are no rules).
    pub(super) fn handle_path(&self, fh: u64) -> Option<PathBuf> {
        if self.rules.is_empty() {
            return None;
        }
        self.handles.get(fh).map(|h| match &*h {
            Handle::File(f) => f.inode.path(),
            Handle::Dir(d) => d.inode.path(),
        })
    }

    pub(super) fn do_rename(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        newparent: &Arc<Inode>,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let flags = nix::fcntl::RenameFlags::from_bits_retain(flags);
        let from = inode_fd!(reply, parent);
        let to = inode_fd!(reply, newparent);
        if let Err(e) = nix::fcntl::renameat2(from.as_fd(), name, to.as_fd(), newname, flags) {
            return reply.error(errno(e));
        }
        // Keep rule paths right: the moved inode (and, for an exchange, the other one).
        self.relink_at(newparent, newname);
        if flags.contains(nix::fcntl::RenameFlags::RENAME_EXCHANGE) {
            self.relink_at(parent, name);
        }
        reply.ok();
    }

    pub(super) fn relink_at(&self, parent: &Arc<Inode>, name: &OsStr) {
        if let Ok(pfd) = parent.fd()
            && let Ok(st) = nix::sys::stat::fstatat(pfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            && let Some(inode) = self.find(key_of(&st))
        {
            inode.relink(parent, name);
        }
    }
}
