#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive
import LayerView

/// Owners between an image and a rootfs on the host, as umoci maps them (its `unmapHeader`
/// when unpacking, `mapHeader` when repacking):
/// - with mappings, an image id becomes the host id of its range and back; an id outside every
///   range is an error;
/// - rootless, nothing is chowned: every file belongs to the user, and an image owner other
///   than root:root is kept in the `user.rootlesscontainers` xattr (each id that is 0 stored as
///   "no change"). A layer's own `user.rootlesscontainers` is dropped with a warning. Repack
///   writes each entry as root:root unless the xattr names another owner, and never puts the
///   xattr itself into the layer.
public struct RootlessOwnership {
    public let options: MapOptions
    public let warn: (String) -> Void

    /// `RootlessResource.xattrName` as the bytes xattr names are.
    package static let xattrName = ByteString(RootlessResource.xattrName)

    public init(options: MapOptions, warn: @escaping (String) -> Void = { _ in }) {
        self.options = options
        self.warn = warn
    }

    /// The owner to chown to (nil: leave the user's) and the xattrs to set, for an image inode.
    func hostOwner(_ inode: MergedView.Inode, path: String) throws(StoreError) -> (owner: (uid: uid_t, gid: gid_t)?, xattrs: [Xattr]) {
        if options.isIdentity {
            return ((uid_t(truncatingIfNeeded: inode.uid), gid_t(truncatingIfNeeded: inode.gid)), inode.xattrs)
        }
        guard options.rootless else {
            let uid = try MapOptions.toHost(inode.uid, options.uidMappings, kind: "uid")
            let gid = try MapOptions.toHost(inode.gid, options.gidMappings, kind: "gid")
            return ((uid_t(truncatingIfNeeded: uid), gid_t(truncatingIfNeeded: gid)), inode.xattrs)
        }
        var xattrs = inode.xattrs
        if xattrs.contains(where: { $0.name == Self.xattrName }) {
            warn("rootless{\(path)} ignoring special xattr \(RootlessResource.xattrName) stored in layer")
            xattrs.removeAll { $0.name == Self.xattrName }
        }
        if let resource = RootlessResource.forOwner(uid: inode.uid, gid: inode.gid) {
            xattrs.append(Xattr(name: Self.xattrName, value: resource.encoded))
        }
        return (nil, xattrs)
    }

    /// An xattr could not be set (errno is set): rootless or in a user namespace a permission
    /// error (EPERM for trusted.*, security.*, user.* on a symlink; EACCES) is expected and
    /// only warned about, as umoci does (its os.ErrPermission is either); anything else is an
    /// error.
    func xattrFailed(_ name: ByteString, path: String) throws(StoreError) {
        let code = errno
        if options.partialRootless && (code == EPERM || code == EACCES) {
            warn("rootless{\(path)} ignoring (usually) harmless EPERM on setxattr \"\(name)\"")
            return
        }
        throw StoreError.system("set xattr \(name) on", path, errno: code)
    }

    /// A layer entry made from a file of the rootfs, as umoci's mapHeader makes it: the owner
    /// mapped back into the container, or rootless root:root unless `user.rootlesscontainers`
    /// says otherwise; that xattr never goes into the layer.
    public func containerEntry(_ entry: inout TarEntry) throws(StoreError) {
        var uid: Int64 = 0
        var gid: Int64 = 0
        if !options.rootless {
            uid = try MapOptions.toContainer(entry.uid, options.uidMappings, kind: "uid")
            gid = try MapOptions.toContainer(entry.gid, options.gidMappings, kind: "gid")
        }
        if let i = entry.xattrs.lastIndex(where: { $0.name == Self.xattrName }) {
            if options.rootless {
                let resource = try RootlessResource(decoding: entry.xattrs[i].value, path: entry.name.description)
                if resource.uid != RootlessResource.noop { uid = Int64(resource.uid) }
                if resource.gid != RootlessResource.noop { gid = Int64(resource.gid) }
                entry.xattrs.removeAll { $0.name == Self.xattrName }
            } else {
                warn("suspicious filesystem: saw special rootless xattr \(RootlessResource.xattrName) in non-rootless invocation")
            }
        }
        entry.uid = uid
        entry.gid = gid
    }
}
