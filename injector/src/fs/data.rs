//! Reads and writes that come to the daemon (files a rule may touch, or no passthrough):
//! injected corruption, and `O_DIRECT` alignment.

use std::cell::RefCell;
use std::os::fd::AsFd;

use fuser::{Errno, ReplyData, ReplyWrite};
use nix::errno::Errno as NixErrno;
use nix::sys::uio::{pread, pwrite};

use super::handle::{FileHandle as OpenFile, Handle};
use super::{Injection, Shared, errno};
use crate::sys::AlignedBuf;

thread_local! {
    static IO_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::new());
}

impl Shared {
    pub(super) fn do_read(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        inj: &Injection,
        reply: ReplyData,
    ) {
        let h = tri!(reply, self.file(fh));
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EBADF);
        };
        let offset = tri!(reply, i64::try_from(offset).map_err(|_| Errno::EINVAL));
        IO_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let buf = buf.slice_mut(size as usize);
            let mut done = 0usize;
            while done < buf.len() {
                match pread(f.fd.as_fd(), &mut buf[done..], offset + done as i64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(NixErrno::EINTR) => continue,
                    Err(e) if done == 0 => return reply.error(errno(e)),
                    Err(_) => break,
                }
            }
            let data = &mut buf[..done];
            if let Some(m) = &inj.mistake {
                m.apply(data);
            }
            reply.data(data);
        });
    }

    pub(super) fn write_all(&self, f: &OpenFile, data: &[u8], offset: i64, reply: ReplyWrite) {
        let mut done = 0usize;
        while done < data.len() {
            match pwrite(f.fd.as_fd(), &data[done..], offset + done as i64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(NixErrno::EINTR) => continue,
                Err(e) if done == 0 => return reply.error(errno(e)),
                Err(_) => break,
            }
        }
        reply.written(u32::try_from(done).unwrap_or(u32::MAX));
    }

    pub(super) fn do_write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_setid: bool,
        inj: &Injection,
        reply: ReplyWrite,
    ) {
        let h = tri!(reply, self.file(fh));
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EBADF);
        };
        if kill_setid {
            // The kernel says the writer may not keep set-ID bits (killpriv_v2).
            tri!(reply, self.kill_setid(u32::MAX, &f.fd).map_err(errno));
        }
        let offset = tri!(reply, i64::try_from(offset).map_err(|_| Errno::EINVAL));
        let misaligned = f.o_direct && !(data.as_ptr() as usize).is_multiple_of(AlignedBuf::ALIGN);
        if inj.mistake.is_none() && !misaligned {
            return self.write_all(f, data, offset, reply);
        }
        IO_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let buf = buf.slice_mut(data.len());
            buf.copy_from_slice(data);
            if let Some(m) = &inj.mistake {
                m.apply(buf);
            }
            self.write_all(f, buf, offset, reply);
        });
    }
}
