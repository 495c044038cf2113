import CLinux

#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import LayerView

/// Writes a merged view out as a real directory tree (`umoci raw unpack`): owners, modes
/// (setuid, setgid, sticky), mtimes, xattrs, device nodes, FIFOs, hardlinks and symlinks.
///
/// Every write is anchored at a directory file descriptor this extractor created itself and
/// opened with `O_NOFOLLOW`; names are single components. A symlink in the image is only ever
/// created, never followed, so nothing can land outside the target directory.
public enum RootfsExtractor {
    static let chunkSize = 1 << 20

    /// Extracts into `rootfs`, which must not exist or be an empty directory. On failure
    /// whatever was created is removed again.
    ///
    /// `options` are umoci's map options: owners are mapped to the host through the mappings
    /// (an id outside them is an error, as in umoci); rootless, nothing is chowned (every file
    /// belongs to the user) and an owner other than root is kept in `user.rootlesscontainers`
    /// (see RootlessOwnership). `warn` gets what umoci warns about (devices made empty files,
    /// xattrs the user cannot set).
    public static func extract(_ view: MergedView, to rootfs: String, options: MapOptions = MapOptions(),
                               warn: @escaping (String) -> Void = { _ in }) throws(StoreError) {
        // umoci checks that the container's root has a host id before anything is written.
        _ = try MapOptions.toHost(0, options.uidMappings, kind: "uid")
        _ = try MapOptions.toHost(0, options.gidMappings, kind: "gid")
        var created = false
        if Files.exists(rootfs) {
            guard Files.isDirectory(rootfs), (try Files.list(rootfs)).isEmpty else {
                throw StoreError(.alreadyExists, "rootfs \(rootfs) already exists and is not an empty directory")
            }
        } else {
            try check(mkdir(rootfs, 0o700), "create rootfs", rootfs)
            created = true
        }
        let rootFd = try Files.open(rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        do {
            defer { close(rootFd) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
            defer { buffer.deallocate() }
            var state = State(view: view, rootFd: rootFd, buffer: buffer, ownership: RootlessOwnership(options: options, warn: warn))
            try state.fill(directory: MergedView.root, fd: rootFd)
            try state.applyMetadata(inode: view.inode(of: MergedView.root), fd: rootFd, path: rootfs)
        } catch {
            // Leave nothing half-written behind.
            if created {
                try? Files.removeTree(rootfs)
            } else {
                // By the names' bytes: a name that is not UTF-8 has no String to remove it by.
                if let fd = try? Files.open(rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) {
                    try? Files.removeContents(of: fd, path: rootfs)
                    close(fd)
                }
            }
            throw error
        }
    }

    struct State {
        let view: MergedView
        let rootFd: Int32
        /// The first path written for each inode with more than one name, for hardlinks.
        var firstPath: [Int32: ByteString] = [:]
        /// Scratch space for copying file data, owned by `extract`.
        let buffer: UnsafeMutableRawBufferPointer
        /// How owners and xattrs are written (mappings, rootless).
        let ownership: RootlessOwnership

        mutating func fill(directory: Int32, fd: Int32) throws(StoreError) {
            for child in view.children(of: directory) {
                let number = view.inodeNumber(of: child)
                let inode = view.inode(number: number)
                let bytePath = view.path(of: child)
                let path = bytePath.description  // for messages
                let name = view.name(of: child)
                if inode.type != .directory, inode.linkCount > 1 {
                    if let first = firstPath[number] {
                        try check(linkat(rootFd, first.c, fd, name.c, 0), "link \(first) to", path)
                        continue
                    }
                    firstPath[number] = bytePath
                }
                switch inode.type {
                case .directory:
                    try check(mkdirat(fd, name.c, 0o700), "mkdir", path)
                    let dfd = try OwnedDescriptor(at: fd, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, path: path)
                    try fill(directory: child, fd: dfd.raw)
                    try applyMetadata(inode: inode, fd: dfd.raw, path: path)
                case .regular:
                    let ffd = try check(Files.retrying { openat(fd, name.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }, "create", path)
                    defer { close(ffd) }
                    try copyData(inode: number, size: inode.size, to: ffd, path: path)
                    try applyMetadata(inode: inode, fd: ffd, path: path)
                case .symlink:
                    try check(symlinkat(inode.linkName.c, fd, name.c), "symlink", path)
                    try applyMetadata(inode: inode, parent: fd, name: name, path: path)
                case .characterDevice where ownership.options.partialRootless, .blockDevice where ownership.options.partialRootless:
                    // mknod(2) is not allowed: an empty file in place of the device, as umoci does.
                    ownership.warn("rootless{\(path)} creating empty file in place of device \(inode.devMajor):\(inode.devMinor)")
                    let ffd = try check(Files.retrying { openat(fd, name.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }, "create", path)
                    defer { close(ffd) }
                    try applyMetadata(inode: inode, fd: ffd, path: path)
                case .characterDevice, .blockDevice, .fifo:
                    let kind: mode_t = inode.type == .fifo ? S_IFIFO : inode.type == .blockDevice ? S_IFBLK : S_IFCHR
                    let dev = umoci_makedev(inode.devMajor, inode.devMinor)
                    if mknodat(fd, name.c, kind | 0o600, inode.type == .fifo ? 0 : dev) != 0 {
                        throw StoreError.system("mknod", path)
                    }
                    try applyMetadata(inode: inode, parent: fd, name: name, path: path)
                case .hardlink:
                    throw StoreError(.corrupt, "\(path): unresolved hardlink in the merged view")
                }
            }
        }

        func copyData(inode: Int32, size: Int64, to fd: Int32, path: String) throws(StoreError) {
            var offset: Int64 = 0
            while offset < size {
                let n = try view.read(inode: inode, at: offset, into: buffer)
                guard n > 0 else { throw StoreError(.corrupt, "\(path): layer data ends at \(offset) of \(size) bytes") }
                try Files.writeAll(fd, UnsafeRawBufferPointer(rebasing: buffer[0..<n]), path: path)
                offset += Int64(n)
            }
        }

        /// Owner, then mode (chown clears setuid), xattrs, then times, on an open file.
        func applyMetadata(inode: MergedView.Inode, fd: Int32, path: String) throws(StoreError) {
            let (owner, xattrs) = try ownership.hostOwner(inode, path: path)
            if let owner, fchown(fd, owner.uid, owner.gid) != 0 {
                throw StoreError.system("chown", path)
            }
            // The mode before the xattrs, as umoci: rootless, a 0000 file (/etc/shadow) then
            // refuses user.rootlesscontainers and loses its owner with a warning, as in umoci.
            // (Setting it first would keep the owner, but umoci 0.4.7 cannot read such an xattr
            // back and then fails to repack the bundle.)
            try check(fchmod(fd, mode_t(inode.mode)), "chmod", path)
            for x in xattrs {
                let r = x.value.withUnsafeBytes { Xattr.set(.descriptor(fd), x.name, $0) }
                if r != 0 { try ownership.xattrFailed(x.name, path: path) }
            }
            var times = [timespec(tv_sec: Int(inode.mtime), tv_nsec: Int(inode.mtimeNanoseconds)),
                         timespec(tv_sec: Int(inode.mtime), tv_nsec: Int(inode.mtimeNanoseconds))]
            try check(futimens(fd, &times), "set times of", path)
        }

        /// The same for what cannot be opened (symlinks, devices, FIFOs): by name in its
        /// directory, never following a symlink.
        func applyMetadata(inode: MergedView.Inode, parent: Int32, name: ByteString, path: String) throws(StoreError) {
            let (owner, xattrs) = try ownership.hostOwner(inode, path: path)
            if let owner, fchownat(parent, name.c, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) != 0 {
                throw StoreError.system("chown", path)
            }
            if inode.type != .symlink, Files.chmodNoFollow(parent, name.c, mode_t(inode.mode)) != 0 {
                throw StoreError.system("chmod", path)
            }
            // The directory fd pins the parent; the name is a single component.
            for x in xattrs {
                let r = x.value.withUnsafeBytes { Xattr.set(.entry(parent: parent, name: name), x.name, $0) }
                if r != 0 { try ownership.xattrFailed(x.name, path: path) }
            }
            var times = [timespec(tv_sec: Int(inode.mtime), tv_nsec: Int(inode.mtimeNanoseconds)),
                         timespec(tv_sec: Int(inode.mtime), tv_nsec: Int(inode.mtimeNanoseconds))]
            try check(utimensat(parent, name.c, &times, AT_SYMLINK_NOFOLLOW), "set times of", path)
        }
    }
}
