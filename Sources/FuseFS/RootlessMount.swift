#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Basics
import OCI
import Archive

/// The owners of a mount served by an unprivileged user (`MountOptions.ownership`), who cannot
/// chown anything in the upper directory:
/// - an image file reports its owner mapped to the host through the maps (container id ->
///   host id); an id outside the maps reports the mapped container root (the server's own id
///   when 0 is not mapped either), as umoci's rootless extraction would own it; the image keeps
///   the true owner, so repack writes it again;
/// - every upper object belongs to the server's user; its container owner is kept in umoci's
///   `user.rootlesscontainers` xattr (RootlessResource, 0 stored as "no change", no xattr for
///   root:root) and reported from there, mapped to the host. Creating, chowning and copying up
///   write that xattr instead of chowning. A symlink cannot carry user.* xattrs: its owner is
///   root's, as with umoci;
/// - device nodes cannot be made: the image's show as empty regular files with the device's
///   permissions (what umoci's rootless extraction makes of them), and a copy-up makes one.
///   Creating a device through the mount fails (EPERM), as it does for the user.
/// The upper directory is then exactly a rootless umoci rootfs's ownership convention, and a
/// repack reads it with RootlessOwnership (rootless).
public struct MountOwnership: Sendable {
    public let uidMappings: [IdMapping]
    public let gidMappings: [IdMapping]
    let rootUid: uid_t
    let rootGid: gid_t

    public init(uidMappings: [IdMapping], gidMappings: [IdMapping]) {
        self.uidMappings = uidMappings
        self.gidMappings = gidMappings
        rootUid = MapOptions.host(of: 0, uidMappings).map { uid_t(truncatingIfNeeded: $0) } ?? geteuid()
        rootGid = MapOptions.host(of: 0, gidMappings).map { gid_t(truncatingIfNeeded: $0) } ?? getegid()
    }

    /// The host id a container (image) id reports.
    func hostUid(_ id: Int64) -> uid_t {
        MapOptions.host(of: id, uidMappings).map { uid_t(truncatingIfNeeded: $0) } ?? rootUid
    }

    func hostGid(_ id: Int64) -> gid_t {
        MapOptions.host(of: id, gidMappings).map { gid_t(truncatingIfNeeded: $0) } ?? rootGid
    }

    /// The container id of a request's host id (the caller); one outside the maps (the user
    /// outside any namespace, when the maps do not hold its id) is the container's root.
    func containerUid(_ id: uid_t) -> UInt32 {
        MapOptions.container(of: Int64(id), uidMappings).map { UInt32(truncatingIfNeeded: $0) } ?? 0
    }

    func containerGid(_ id: gid_t) -> UInt32 {
        MapOptions.container(of: Int64(id), gidMappings).map { UInt32(truncatingIfNeeded: $0) } ?? 0
    }

    /// Device nodes show as regular files (see above).
    static func reportedType(_ t: TarEntryType) -> TarEntryType {
        t == .characterDevice || t == .blockDevice ? .regular : t
    }
}

extension OverlayFS {
    /// The container owner of an upper object: its user.rootlesscontainers xattr ("no change"
    /// and a missing or unreadable xattr are root's).
    func rootlessOwner(_ object: Xattr.Target) -> (uid: UInt32, gid: UInt32) {
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { Xattr.get(object, RootlessResource.xattrName, into: $0) }
        guard n > 0, let r = try? RootlessResource(decoding: Array(buffer[0..<n]), path: "") else { return (0, 0) }
        return (r.uid == RootlessResource.noop ? 0 : r.uid, r.gid == RootlessResource.noop ? 0 : r.gid)
    }

    /// An upper object's stat with the owner the mount reports for it (unchanged when the
    /// server owns what it serves).
    func reportingOwner(_ st: stat, _ object: Xattr.Target) -> stat {
        guard let ownership else { return st }
        var st = st
        let owner = rootlessOwner(object)
        st.st_uid = ownership.hostUid(Int64(owner.uid))
        st.st_gid = ownership.hostGid(Int64(owner.gid))
        return st
    }

    /// An unprivileged server's user.rootlesscontainers is how it keeps owners, not an
    /// attribute of the file: the mount neither shows it nor lets it be set (EPERM), and the
    /// layer's own (which umoci's rootless extraction drops too) does not show either.
    func hidesXattr(_ key: UnsafePointer<CChar>) -> Bool {
        ownership != nil && strcmp(key, RootlessResource.xattrName) == 0
    }

    /// listxattr without user.rootlesscontainers; `list` is the unfiltered listxattr.
    func listxattrHidingOwner(_ buffer: UnsafeMutableRawBufferPointer?,
                              _ list: (UnsafeMutableRawBufferPointer?) throws(Errno) -> Int) throws(Errno) -> Int {
        var names: [UInt8] = []
        for _ in 0..<4 {
            let size = try list(nil)
            let all = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 1)
            defer { all.deallocate() }
            let n: Int
            do { n = try list(all) } catch where error.code == ERANGE { continue }  // grew meanwhile
            let hidden = Array(RootlessResource.xattrName.utf8)
            names = Array(all[0..<n]).split(separator: 0).filter { Array($0) != hidden }.flatMap { Array($0) + [0] }
            guard let buffer else { return names.count }
            if buffer.count < names.count { throw Errno(ERANGE) }
            names.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return names.count
        }
        throw Errno(ERANGE)
    }

    /// A chown through the mount: the request's host ids, either nil, become the recorded
    /// container owner.
    func rootlessChown(_ object: Xattr.Target, uid: uid_t?, gid: gid_t?) throws(Errno) {
        guard let ownership else { return }
        let old = rootlessOwner(object)
        try object.recordRootlessOwner(uid: uid.map(ownership.containerUid) ?? old.uid, gid: gid.map(ownership.containerGid) ?? old.gid)
    }
}

extension Xattr.Target {
    /// Records `uid`/`gid` (container ids) as the object's owner in user.rootlesscontainers (an
    /// unprivileged server's way, see MountOwnership). A symlink cannot carry the xattr: it
    /// stays root's, as in umoci's rootless extraction.
    func recordRootlessOwner(uid: UInt32, gid: UInt32) throws(Errno) {
        if let resource = RootlessResource.forOwner(uid: Int64(uid), gid: Int64(gid)) {
            let r = resource.encoded.withUnsafeBytes { Xattr.set(self, RootlessResource.xattrName, $0) }
            if r != 0 && errno != EPERM { throw Errno.current }
        } else if Xattr.remove(self, RootlessResource.xattrName) != 0 && errno != ENODATA && errno != EPERM {
            throw Errno.current
        }
    }
}

/// Detaches an unprivileged user's mount lazily through Debian's setuid fusermount3 (umount2
/// needs CAP_SYS_ADMIN). Output goes nowhere; waits for it (it does not touch the mount).
func fusermountDetach(_ path: String) {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
    let words: [String] = ["fusermount3", "-u", "-z", "-q", path]
    var argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    guard posix_spawnp(&pid, "fusermount3", &actions, nil, &argv, environ) == 0 else { return }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
}
