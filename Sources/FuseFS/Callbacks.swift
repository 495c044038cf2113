#if canImport(Glibc)
import Glibc
#endif
import CFuse
import CLinux
import Basics

// The libfuse low-level callback table. Each callback is a non-capturing C function that finds
// the OverlayFS through fuse_req_userdata, runs one method, and replies exactly once: every
// Errno becomes fuse_reply_err at this boundary, nothing is thrown or unwinds across C.

@inline(__always)
private func context(_ req: fuse_req_t?) -> ServerContext {
    Unmanaged<ServerContext>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
}

@inline(__always)
private func filesystem(_ req: fuse_req_t?) -> OverlayFS { context(req).fs }

@inline(__always)
private func counted(_ req: fuse_req_t?, _ r: Request) { context(req).counts.count(r) }

/// After a change that removed an entry of `parent`: the mount detaches itself, before the
/// reply, when that emptied its root (see Following).
@inline(__always)
private func removed(_ req: fuse_req_t?, from parent: fuse_ino_t) {
    if parent == OverlayFS.rootId { context(req).detacher.removed(from: parent, filesystem(req)) }
}

@inline(__always)
private func handle(_ fi: UnsafeMutablePointer<fuse_file_info>?) -> Handle? {
    guard let fi, fi.pointee.fh != 0 else { return nil }
    return Unmanaged<Handle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!).takeUnretainedValue()
}

private func store(_ h: Handle, in fi: UnsafeMutablePointer<fuse_file_info>?) {
    fi?.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(h).toOpaque()))
}

/// Ends a file handle stored by `store` (release, or a reply the kernel did not take: fs is
/// taken before the reply, which frees the request).
private func discard(_ fs: OverlayFS, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let fi, fi.pointee.fh != 0 else { return }
    let h = Unmanaged<Handle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!)
    fs.released(h.takeUnretainedValue())
    h.release()
    fi.pointee.fh = 0
}

/// A name from the kernel: bytes, whatever they are (no decoding, no normalization).
@inline(__always)
private func name(_ p: UnsafePointer<CChar>?) -> ByteString? {
    guard let p else { return nil }
    return ByteString(cString: p)
}

private func replyEntry(_ req: fuse_req_t?, _ id: UInt64, _ st: stat) {
    var e = fuse_entry_param()
    e.ino = id
    e.generation = 0
    e.attr = st
    e.attr_timeout = OverlayFS.attributeTimeout(st)
    e.entry_timeout = OverlayFS.timeout
    fuse_reply_entry(req, &e)
}

private func entryParam(_ id: UInt64, _ st: stat) -> fuse_entry_param {
    var e = fuse_entry_param()
    e.ino = id
    e.attr = st
    e.attr_timeout = OverlayFS.attributeTimeout(st)
    e.entry_timeout = OverlayFS.timeout
    return e
}

private func caller(_ req: fuse_req_t?) -> (uid_t, gid_t) {
    let ctx = fuse_req_ctx(req)!.pointee
    return (ctx.uid, ctx.gid)
}

private func reply(_ req: fuse_req_t?, _ body: () throws(Errno) -> Void) {
    let fs = filesystem(req)  // req is freed by the reply
    do {
        try body()
    } catch {
        fuse_reply_err(req, error.code)
    }
    sendInvalidations(fs)  // what a failed request queued
}

/// Tells the kernel about the nodes whose caches a request made stale: other names of a file
/// it changed. Sent before the reply, so that the caller's next call sees the change through
/// every name. Never the request's own node (the kernel may hold that one's page locks for
/// the request); other nodes' pages can only be held by requests other worker threads serve.
private func sendInvalidations(_ fs: OverlayFS) {
    let ids = fs.takeInvalidations()
    guard !ids.isEmpty, let se = fs.session else { return }
    for id in ids { fuse_lowlevel_notify_inval_inode(se, id, 0, 0) }
}

private func readDirectory(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ off: off_t,
                           _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
    guard let h = handle(fi) else { fuse_reply_err(req, EBADF); return }
    let fs = filesystem(req)
    let buffer = ThreadBuffer.get(max(size, 1))
    let base = buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
    var used = 0
    var index = Int(off)
    let total = h.entries.count + 2
    while index < total {
        let next = off_t(index + 1)
        let added: Int
        if index < 2 {
            var st = stat()
            st.st_ino = numericCast(index == 0 ? h.dotInos.dot : h.dotInos.dotDot)
            st.st_mode = S_IFDIR
            let dots = index == 0 ? "." : ".."
            if plus {
                var e = entryParam(0, st)
                added = fuse_add_direntry_plus(req, base + used, size - used, dots, &e, next)
            } else {
                added = fuse_add_direntry(req, base + used, size - used, dots, &st, next)
            }
        } else {
            let entry = h.entries[index - 2]
            if plus {
                guard let (id, st) = try? fs.lookup(ino, entry.name) else { index += 1; continue }
                var e = entryParam(id, st)
                added = fuse_add_direntry_plus(req, base + used, size - used, entry.name.c, &e, next)
                if added > size - used { fs.forget(id, 1) }
            } else {
                var st = stat()
                st.st_ino = numericCast(entry.ino)
                st.st_mode = mode_t(entry.type) << 12
                added = fuse_add_direntry(req, base + used, size - used, entry.name.c, &st, next)
            }
        }
        if added > size - used { break }
        used += added
        index += 1
    }
    fuse_reply_buf(req, base, used)
}

func makeOperations() -> fuse_lowlevel_ops {
    var ops = fuse_lowlevel_ops()
    ops.`init` = { _, conn in
        guard let conn else { return }
        // AUTO_INVAL_DATA: cached pages go when a file's mtime or size moved, which is how a
        // change through one name of a hardlinked file reaches the others (see attributeTimeout).
        let wanted = UInt32(FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_READDIRPLUS
                            | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE)
        conn.pointee.want |= wanted & conn.pointee.capable
        conn.pointee.want &= ~UInt32(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK)
        conn.pointee.max_write = 1 << 20
        conn.pointee.max_readahead = max(conn.pointee.max_readahead, 1 << 20)
    }
    ops.lookup = { req, parent, cname in
        counted(req, .lookup)
        reply(req) { () throws(Errno) in
            guard let n = name(cname) else { throw Errno(ENOENT) }
            do throws(Errno) {
                let (id, st) = try filesystem(req).lookup(parent, n)
                replyEntry(req, id, st)
            } catch where error.code == ENOENT {
                // A negative entry the kernel may cache: programs probe many missing paths
                // (an interpreter's module search), and creating one goes through the kernel.
                var e = fuse_entry_param()
                e.ino = 0
                e.entry_timeout = OverlayFS.timeout
                fuse_reply_entry(req, &e)
            }
        }
    }
    ops.forget = { req, ino, count in
        counted(req, .forget)
        filesystem(req).forget(ino, count)
        fuse_reply_none(req)
    }
    ops.forget_multi = { req, count, forgets in
        counted(req, .forget)
        let fs = filesystem(req)
        if let forgets {
            for i in 0..<count { fs.forget(forgets[i].ino, forgets[i].nlookup) }
        }
        fuse_reply_none(req)
    }
    ops.getattr = { req, ino, fi in
        counted(req, .getattr)
        reply(req) { () throws(Errno) in
            let fs = filesystem(req)
            let h = handle(fi)
            var st = try fs.shared { () throws(Errno) -> stat in try fs.getattr(ino, fd: fs.currentFd(h)) }
            fuse_reply_attr(req, &st, OverlayFS.attributeTimeout(st))
        }
    }
    ops.setattr = { req, ino, attr, toSet, fi in
        counted(req, .setattr)
        reply(req) { () throws(Errno) in
            guard let a = attr?.pointee else { throw Errno(EINVAL) }
            var c = OverlayFS.AttrChange()
            if toSet & FUSE_SET_ATTR_MODE != 0 { c.mode = a.st_mode }
            if toSet & FUSE_SET_ATTR_UID != 0 { c.uid = a.st_uid }
            if toSet & FUSE_SET_ATTR_GID != 0 { c.gid = a.st_gid }
            if toSet & FUSE_SET_ATTR_SIZE != 0 { c.size = a.st_size }
            if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 {
                c.atime = timespec(tv_sec: 0, tv_nsec: Sys.UTIME_NOW)
            } else if toSet & FUSE_SET_ATTR_ATIME != 0 {
                c.atime = a.st_atim
            }
            if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 {
                c.mtime = timespec(tv_sec: 0, tv_nsec: Sys.UTIME_NOW)
            } else if toSet & FUSE_SET_ATTR_MTIME != 0 {
                c.mtime = a.st_mtim
            }
            let fs = filesystem(req)
            var st = try fs.setattr(ino, c, handle: handle(fi))
            sendInvalidations(fs)
            fuse_reply_attr(req, &st, OverlayFS.attributeTimeout(st))
        }
    }
    ops.readlink = { req, ino in
        counted(req, .readlink)
        reply(req) { () throws(Errno) in
            let target = try filesystem(req).readlink(ino)
            target.withUnsafeBufferPointer { _ = fuse_reply_readlink(req, $0.baseAddress) }
        }
    }
    ops.mknod = { req, parent, cname, mode, rdev in
        counted(req, .mknod)
        reply(req) { () throws(Errno) in
            guard let n = name(cname) else { throw Errno(EINVAL) }
            let (uid, gid) = caller(req)
            let type = mode & S_IFMT
            let kind: OverlayFS.Kind = type == S_IFREG || type == 0 ? .file(flags: O_RDONLY) : .node(type: type, rdev: rdev)
            let c = try filesystem(req).create(parent, n, kind, mode: mode, uid: uid, gid: gid)
            if c.fd >= 0 { close(c.fd) }
            replyEntry(req, c.id, c.attr)
        }
    }
    ops.mkdir = { req, parent, cname, mode in
        counted(req, .mkdir)
        reply(req) { () throws(Errno) in
            guard let n = name(cname) else { throw Errno(EINVAL) }
            let (uid, gid) = caller(req)
            let c = try filesystem(req).create(parent, n, .directory, mode: mode, uid: uid, gid: gid)
            replyEntry(req, c.id, c.attr)
        }
    }
    ops.symlink = { req, link, parent, cname in
        counted(req, .symlink)
        reply(req) { () throws(Errno) in
            guard let n = name(cname), let link else { throw Errno(EINVAL) }
            let (uid, gid) = caller(req)
            let c = try filesystem(req).create(parent, n, .symlink(ByteString(cString: link)), mode: 0o777, uid: uid, gid: gid)
            replyEntry(req, c.id, c.attr)
        }
    }
    ops.unlink = { req, parent, cname in
        counted(req, .unlink)
        reply(req) { () throws(Errno) in
            guard let n = name(cname) else { throw Errno(ENOENT) }
            let fs = filesystem(req)
            try fs.remove(parent, n, directory: false)
            sendInvalidations(fs)
            removed(req, from: parent)
            fuse_reply_err(req, 0)
        }
    }
    ops.rmdir = { req, parent, cname in
        counted(req, .rmdir)
        reply(req) { () throws(Errno) in
            guard let n = name(cname) else { throw Errno(ENOENT) }
            let fs = filesystem(req)
            try fs.remove(parent, n, directory: true)
            sendInvalidations(fs)
            removed(req, from: parent)
            fuse_reply_err(req, 0)
        }
    }
    ops.rename = { req, parent, cname, newParent, cnewName, flags in
        counted(req, .rename)
        reply(req) { () throws(Errno) in
            guard let n = name(cname), let nn = name(cnewName) else { throw Errno(EINVAL) }
            let fs = filesystem(req)
            try fs.rename(parent, n, newParent, nn, flags: flags)
            sendInvalidations(fs)
            if newParent != parent { removed(req, from: parent) }
            fuse_reply_err(req, 0)
        }
    }
    ops.link = { req, ino, newParent, cnewName in
        counted(req, .link)
        reply(req) { () throws(Errno) in
            guard let nn = name(cnewName) else { throw Errno(EINVAL) }
            let fs = filesystem(req)
            let (id, st) = try fs.link(ino, newParent, nn)
            // Names are separate kernel inodes: drop the source's cached attributes (st_nlink)
            // before replying, so a stat right after link() sees the new count. With a negative
            // offset the kernel only bumps the attribute version (no page or inode locks), so
            // this cannot wait on the link operation in progress.
            if let se = fs.session { fuse_lowlevel_notify_inval_inode(se, ino, -1, 0) }
            sendInvalidations(fs)
            replyEntry(req, id, st)
        }
    }
    ops.open = { req, ino, fi in
        counted(req, .open)
        reply(req) { () throws(Errno) in
            guard let fi else { throw Errno(EINVAL) }
            let fs = filesystem(req)
            let h = try fs.open(ino, flags: fi.pointee.flags)
            sendInvalidations(fs)
            fi.pointee.keep_cache = h.fd < 0 ? 1 : 0
            store(h, in: fi)
            if fuse_reply_open(req, fi) != 0 { discard(fs, fi) }
        }
    }
    ops.create = { req, parent, cname, mode, fi in
        counted(req, .create)
        reply(req) { () throws(Errno) in
            guard let n = name(cname), let fi else { throw Errno(EINVAL) }
            let (uid, gid) = caller(req)
            let fs = filesystem(req)
            let c = try fs.create(parent, n, .file(flags: fi.pointee.flags), mode: mode, uid: uid, gid: gid)
            let h = Handle()
            h.fd = c.fd
            h.node = c.id
            h.generation = fs.generation.load(ordering: .relaxed)
            if fi.pointee.flags & O_ACCMODE != O_RDONLY { fs.registerWriter(h) }
            store(h, in: fi)
            var e = entryParam(c.id, c.attr)
            if fuse_reply_create(req, &e, fi) != 0 { discard(fs, fi) }
        }
    }
    ops.read = { req, ino, size, off, fi in
        counted(req, .read)
        reply(req) { () throws(Errno) in
            guard let h = handle(fi) else { throw Errno(EBADF) }
            let buffer = ThreadBuffer.get(max(size, 1))
            let count = try filesystem(req).read(h, at: off, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]))
            fuse_reply_buf(req, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), count)
        }
    }
    ops.write = { req, ino, buf, size, off, fi in
        counted(req, .write)
        reply(req) { () throws(Errno) in
            guard let h = handle(fi), h.fd >= 0, let buf else { throw Errno(EBADF) }
            let fs = filesystem(req)
            var done = 0
            while done < size {
                let r = pwrite(h.fd, buf + done, size - done, off + off_t(done))
                if r < 0 { if errno == EINTR { continue }; throw Errno.current }
                done += r
            }
            fs.wrote(h)
            sendInvalidations(fs)
            fuse_reply_write(req, done)
        }
    }
    // Every close() sent a FLUSH and waited for its reply, for nothing: writes reach the upper
    // file when they are made (no writeback cache) and locks are the kernel's. ENOSYS tells the
    // kernel so once; it then closes files without asking (fuse_conn.no_flush), which saves a
    // round trip per file that cp, tar and mv open.
    ops.flush = { req, _, _ in
        counted(req, .flush)
        fuse_reply_err(req, ENOSYS)
    }
    ops.release = { req, _, fi in
        counted(req, .release)
        discard(filesystem(req), fi)
        fuse_reply_err(req, 0)
    }
    ops.fsync = { req, _, datasync, fi in
        counted(req, .fsync)
        if let h = handle(fi), h.fd >= 0 {
            let r = datasync != 0 ? fdatasync(h.fd) : fsync(h.fd)
            fuse_reply_err(req, r == 0 ? 0 : errno)
        } else {
            fuse_reply_err(req, 0)
        }
    }
    ops.opendir = { req, ino, fi in
        counted(req, .opendir)
        reply(req) { () throws(Errno) in
            let h = Handle()
            let fs = filesystem(req)
            // The root of a mount whose owner is being deleted lists as empty (see Following).
            let entries = try fs.listDirectory(ino)
            h.entries = context(req).detacher.opensEmpty(ino, entries: entries, opener: fuse_req_ctx(req)!.pointee.pid) ? [] : entries
            h.dotInos = try fs.dotInos(ino)
            store(h, in: fi)
            if fuse_reply_open(req, fi) != 0 { discard(fs, fi) }
        }
    }
    ops.readdir = { req, ino, size, off, fi in
        counted(req, .readdir)
        readDirectory(req, ino, size, off, fi, plus: false)
    }
    ops.readdirplus = { req, ino, size, off, fi in
        counted(req, .readdirplus)
        readDirectory(req, ino, size, off, fi, plus: true)
    }
    ops.releasedir = { req, _, fi in
        counted(req, .releasedir)
        discard(filesystem(req), fi)
        fuse_reply_err(req, 0)
    }
    ops.fsyncdir = { req, _, _, _ in
        counted(req, .fsyncdir)
        fuse_reply_err(req, 0)
    }
    ops.statfs = { req, _ in
        counted(req, .statfs)
        var st = statvfs()
        if fstatvfs(filesystem(req).upperRoot, &st) != 0 { fuse_reply_err(req, errno); return }
        fuse_reply_statfs(req, &st)
    }
    ops.setxattr = { req, ino, cname, value, size, flags in
        counted(req, .setxattr)
        reply(req) { () throws(Errno) in
            guard let n = cname else { throw Errno(EINVAL) }
            let fs = filesystem(req)
            try fs.setxattr(ino, n, UnsafeRawBufferPointer(start: value, count: size), flags: flags)
            sendInvalidations(fs)
            fuse_reply_err(req, 0)
        }
    }
    ops.getxattr = { req, ino, cname, size in
        counted(req, .getxattr)
        // Before each write the kernel asks for security.capability: a file the mount made
        // answers from the node table (no allocation, no system call).
        if let cname, strcmp(cname, "security.capability") == 0, filesystem(req).hasNoCapability(ino) {
            fuse_reply_err(req, ENODATA)
            return
        }
        reply(req) { () throws(Errno) in
            guard let n = cname else { throw Errno(ENODATA) }
            let fs = filesystem(req)
            if size == 0 {
                fuse_reply_xattr(req, try fs.getxattr(ino, n, nil))
            } else {
                let buffer = ThreadBuffer.get(size)
                let count = try fs.getxattr(ino, n, buffer)
                fuse_reply_buf(req, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), count)
            }
        }
    }
    ops.listxattr = { req, ino, size in
        counted(req, .listxattr)
        reply(req) { () throws(Errno) in
            let fs = filesystem(req)
            if size == 0 {
                fuse_reply_xattr(req, try fs.listxattr(ino, nil))
            } else {
                let buffer = ThreadBuffer.get(size)
                let count = try fs.listxattr(ino, buffer)
                fuse_reply_buf(req, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), count)
            }
        }
    }
    ops.removexattr = { req, ino, cname in
        counted(req, .removexattr)
        reply(req) { () throws(Errno) in
            guard let n = cname else { throw Errno(ENODATA) }
            let fs = filesystem(req)
            try fs.removexattr(ino, n)
            sendInvalidations(fs)
            fuse_reply_err(req, 0)
        }
    }
    ops.fallocate = { req, _, mode, off, length, fi in
        counted(req, .fallocate)
        guard let h = handle(fi), h.fd >= 0 else { fuse_reply_err(req, EBADF); return }
        let r = umoci_fallocate(h.fd, mode, Int64(off), Int64(length))
        fuse_reply_err(req, r == 0 ? 0 : errno)
    }
    return ops
}
