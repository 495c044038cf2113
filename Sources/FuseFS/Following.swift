#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// How a mount follows the directory it belongs to (`MountOptions.following`): a mount that
/// its owner throws away (say `rm -rf` of a bundle) detaches itself lazily, so that the mount
/// point can be removed like a plain directory; descriptors still open under it keep working,
/// and serve() returns once the kernel releases the file system.
///
/// The mount detaches:
/// - inside the request (unlink, rmdir, rename) that left the merged root directory empty,
///   before replying, so that the caller's next step (`rmdir` of the mount point) finds the
///   plain directory;
/// - inside an opendir of the root when `ownerGone` says the owner is going away; that
///   directory then lists as empty, so that a recursive delete that reached the mount point
///   after deleting the owner's other files finds nothing to delete and removes the plain
///   directory. `ownerGone` also hears whether the root is empty already and who opens it: a
///   recursive delete of the owner that meets an empty root has nothing to remove through the
///   mount, so only the opener can tell (say, by holding the owner's directory open);
/// - when the owner calls `OverlayServer.detach(reason:)` (say on an inotify event).
public struct Following: Sendable {
    /// An opendir of the mount's root.
    public struct RootOpen: Sendable {
        /// The opening thread (the FUSE request's pid).
        public var opener: pid_t
        /// The merged root has no entries.
        public var rootIsEmpty: Bool
    }

    /// Asked on a FUSE worker thread, inside the root opendir; must be quick and must not block.
    public var ownerGone: @Sendable (RootOpen) -> Bool
    /// Told once, with the reason, on the thread that is about to detach (unless stop() is);
    /// must not block.
    public var detached: @Sendable (String) -> Void

    public init(ownerGone: @escaping @Sendable (RootOpen) -> Bool, detached: @escaping @Sendable (String) -> Void) {
        self.ownerGone = ownerGone
        self.detached = detached
    }
}

/// The lazy detach of one mount, done at most once. The mount point is named through its parent
/// directory, held open from before the mount, so that the mount is found after the owner was
/// renamed, and a second call can never unmount something mounted at that path later.
///
/// Shared by FUSE worker threads, the owner's threads and serve(); `detachedReason` (a Mutex)
/// is the only mutable state; `parent` is owned (closed in deinit).
final class MountDetacher: Sendable {
    private let parent: Int32
    private let name: String
    private let path: String
    let following: Following?
    private let detachedReason = Mutex<String?>(nil)

    init(mountpoint: String, following: Following?) {
        path = mountpoint
        self.following = following
        var trimmed = mountpoint
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        if let slash = trimmed.lastIndex(of: "/") {
            let dir = slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
            name = String(trimmed[trimmed.index(after: slash)...])
            parent = open(dir, Sys.O_PATH | O_DIRECTORY | O_CLOEXEC)
        } else {
            name = trimmed
            parent = open(".", Sys.O_PATH | O_DIRECTORY | O_CLOEXEC)
        }
    }

    deinit { if parent >= 0 { close(parent) } }

    var isDetached: Bool { detachedReason.withLock { $0 != nil } }

    /// Detaches the mount unless that was done already; true if this call did. `following`'s
    /// `detached` is told unless `notify` is false (stop()).
    @discardableResult
    func detach(_ reason: String, notify: Bool = true) -> Bool {
        let first = detachedReason.withLock { r -> Bool in
            guard r == nil else { return false }
            r = reason
            return true
        }
        guard first else { return false }
        // Before the detach: once detached, serve() may return at any moment, and the owner
        // must know by then that the mount followed it.
        if notify { following?.detached(reason) }
        // Not under the lock: when this drops the last reference to the mount (no request in
        // flight), the kernel tears the file system down on the way out of umount2 and waits
        // for the requests still being answered, which may be asking isDetached. Inside a
        // request it cannot be the last reference; MNT_DETACH neither waits for nor calls into
        // this file system there.
        if parent < 0 || umount2("/proc/self/fd/\(parent)/\(name)", Int32(MNT_DETACH)) != 0 {
            if umount2(path, Int32(MNT_DETACH)) != 0 && errno == EPERM && geteuid() != 0 {
                // An unprivileged user's mount: fusermount3 detaches it (RootlessMount.swift).
                fusermountDetach(parent >= 0 ? "/proc/\(getpid())/fd/\(parent)/\(name)" : path)
            }
        }
        return true
    }

    /// After a request that removed an entry from the directory `parentId`: detaches if that
    /// left the merged root empty.
    func removed(from parentId: UInt64, _ fs: OverlayFS) {
        guard following != nil, parentId == OverlayFS.rootId, !isDetached else { return }
        if let entries = try? fs.listDirectory(OverlayFS.rootId), entries.isEmpty {
            detach("the root directory was emptied through the mount")
        }
    }

    /// In an opendir of `id` by `opener`, listing `entries`: whether it must list as empty,
    /// detaching first when the owner is going away.
    func opensEmpty(_ id: UInt64, entries: [OverlayFS.DirEntry], opener: pid_t) -> Bool {
        guard let following, id == OverlayFS.rootId,
              following.ownerGone(Following.RootOpen(opener: opener, rootIsEmpty: entries.isEmpty)) else { return false }
        detach("the mount's owner is being deleted")
        return true
    }
}

/// What a callback finds through fuse_req_userdata: the file system, the detacher and the
/// request counters. Owned by the OverlayServer for the life of the session; all members are
/// immutable references.
final class ServerContext: Sendable {
    let fs: OverlayFS
    let detacher: MountDetacher
    let counts = RequestCounts()

    init(fs: OverlayFS, detacher: MountDetacher) {
        self.fs = fs
        self.detacher = detacher
    }
}
