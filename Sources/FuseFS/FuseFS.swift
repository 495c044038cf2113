// FuseFS: the libfuse3 low-level server behind `umoci unpack`: an image's merged view as the
// read-only lower layer under a writable upper directory. See OverlayServer.
#if canImport(Glibc)
import Glibc
#endif
import CFuse
import CLinux
import Basics
import LayerView
import UpperFormat
import Synchronization

/// Options of the mount.
public struct MountOptions: Sendable {
    /// Lets users other than the mounting one (root) use the mount (`allow_other`).
    public var allowOther = true
    /// Idle worker threads kept by libfuse's multithreaded loop.
    public var threads = 4
    /// libfuse's debug output (every request) on stderr.
    public var debug = false
    /// When set, the mount detaches itself when its owner throws it away (see Following);
    /// nil: it stays until unmounted or stopped.
    public var following: Following?
    /// Set for a server run by an unprivileged user (mounted through fusermount3): owners are
    /// reported through these maps and kept in user.rootlesscontainers (see MountOwnership);
    /// nil: the server is root and creates objects with the caller's owner.
    public var ownership: MountOwnership?
    public init() {}
}

/// Serves a merged, copy-on-write view of an image through FUSE: `view` (immutable) is the
/// lower layer, `upperDirectory` receives every change in the form of an OCI layer diff, so
/// that `umoci repack` can turn it into a layer as is.
///
/// ## Upper directory format (OCI layer diff)
/// - Changed or new objects are real files, directories, symlinks and nodes in the upper
///   directory, with their real owner, mode, times and xattrs (the server runs as root).
/// - Deleting something the lower view has at that path leaves `.wh.NAME` (an empty regular
///   file, mode 0, root-owned; all of them hardlinks of one shared file in the upper root,
///   see UpperWhiteout) in the upper copy of its parent directory; for a NAME of 252
///   bytes or more (no room for `.wh.`) a character device 0/0 at NAME itself (UpperWhiteout).
/// - A directory that replaces a lower directory wholesale (mkdir where a lower directory was
///   deleted, or a renamed directory that came from or lands on lower content) holds an empty
///   `.wh..wh..opq`: nothing of the lower directory at that path shows through.
/// - Names starting with `.wh.` never appear through the mount: lookup gives ENOENT, creating
///   or renaming to one EINVAL. (Copy-up temporaries are named `.wh..wh..umoci-copyup.*` so
///   that they never show either; what an interrupted copy-up left is removed at mount time
///   and never packed.) Names are bytes (ByteString): no decoding, no normalization.
///
/// ## Merging
/// - lookup(parent, name): the upper entry if the parent's upper directory has one; else
///   nothing if `.wh.name` is there, if the upper parent is opaque, or if the parent has no
///   lower directory; else the lower view's child. An upper directory merges with the lower
///   directory at the same path unless it is opaque (or the lower object is not a directory).
/// - readdir: upper entries (no `.wh.*`) plus the lower children not shadowed or whited out;
///   `.` and `..` first. The listing is taken at opendir and kept in the handle, so offsets
///   are stable.
/// - A merged directory (upper and lower) reports st_nlink 1 ("unknown"), since neither side's
///   count is right.
/// - The root of a fresh (empty) upper directory takes the image root's owner, mode, mtime and
///   xattrs at mount time; the root's attributes are then the upper directory's.
///
/// ## Copy-up
/// On the first change of a lower object (open for writing or with O_TRUNC, truncate, chmod,
/// chown, utimens, setxattr/removexattr, link, rename source) its parent chain is copied up
/// as directories with the lower directories' owner/mode/mtime/xattrs (not opaque), then the
/// object itself: a directory as an empty directory (which keeps merging with the lower one),
/// anything else whole, written under a temporary name in the upper parent, with owner, then
/// mode (after chown, so setuid bits stay), xattrs and mtime, then renamed into place.
/// Metadata-only changes copy the whole file too (OCI layers have no metadata-only entries);
/// an open with O_TRUNC copies up without the data. A copy-up keeps the times of the
/// directory it happens in (it changes no name the mount shows).
/// A hardlinked lower file is copied up once, and every other name of it that the mount still
/// shows becomes a hardlink of that copy (as overlayfs's index keeps groups), so a change
/// through any name shows through all; the group keeps the st_ino it had. Each name is a node
/// of its own for the kernel, so a change through one invalidates the others' caches before
/// the reply, their attributes are not cached, and AUTO_INVAL_DATA drops their pages.
/// A handle opened on a lower file reads the upper copy once one exists (writes made after
/// it opened show, as on ext4). A file unlinked while open keeps an O_PATH descriptor in its
/// node, so fstat, fchmod and ftruncate on it go on working.
///
/// ## Removal and rename
/// - unlink/rmdir remove the upper object (rmdir needs the merged directory empty, then drops
///   the `.wh.*` files inside it) and, if the lower view has the path (parent not opaque),
///   leave `.wh.NAME`. Creating anything at a path removes a stale `.wh.NAME` there.
/// - rename copies the source up; a directory with lower content is first copied up as its
///   whole merged subtree, then marked opaque. Targets: files are replaced, directories must
///   be merged-empty (ENOTEMPTY), type mismatches give EISDIR/ENOTDIR. The source path gets a
///   whiteout if the lower view has it; a directory landing where the lower view has a
///   directory is marked opaque; a moved directory keeps its mtime. Renaming one name of a
///   file onto another name of the same file does nothing (POSIX). RENAME_NOREPLACE gives
///   EEXIST; RENAME_EXCHANGE swaps the two (each side made self-contained first, as a moved
///   directory is); RENAME_WHITEOUT gives EINVAL.
///
/// ## Inode numbers
/// Lower objects report st_ino = view inode number + 1, so hardlinked names share it and report
/// the view's link count. Upper objects report their upper st_ino + 2^40, except objects that
/// were copied up, which keep their lower number (a map keyed by the upper st_dev/st_ino, for
/// the life of the mount, so it follows renames and links). FUSE node ids are per path, allocated
/// from a counter and never reused.
///
/// ## Rebase
/// `rebase(onto:...)` replaces the lower view while mounted with one that already holds what
/// the upper directory held when it was packed; what is still as packed leaves the upper
/// directory. The mount shows the same tree and the same st_ino before and after (lower inode
/// numbers are then carried over path by path instead of being view number + 1). See
/// OverlayFS.rebase.
///
/// ## Permissions and ownership
/// Mounted with default_permissions (the kernel checks access against getattr), allow_other
/// (`MountOptions.allowOther`), suid, nodev (device nodes show, but opening one through the
/// mount fails), fsname=umoci, subtype=umoci. Objects are created by the root server on behalf
/// of the caller: owner = the request's uid/gid, gid and S_ISGID (directories) inherited from a
/// setgid parent, mode exactly as the kernel sends it (it has already applied the umask).
///
/// ## Safety
/// Upper paths are resolved from an fd of the upper root with openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS) (or component by component with O_NOFOLLOW), and every operation uses
/// *at() calls without following the last component, so nothing in the upper directory can
/// redirect the server outside it. The server assumes it is the only writer of the upper
/// directory while mounted (upper state is cached per node and kept up to date by each change).
///
/// ## Following the owner
/// With `MountOptions.following`, the mount detaches itself (lazily, once) when the merged root
/// is emptied through it or when its owner is going away, and `detach(reason:)` does the same
/// for the owner; see Following. The mount point is then a plain directory again.
///
/// ## Threads and ownership
/// `init` mounts; `serve()` runs libfuse's multithreaded loop on the calling thread (callbacks
/// run on libfuse's worker threads); `stop()` may be called from any thread, before, during or
/// after `serve()`. The object owns the session and the filesystem state; `serve()` unmounts
/// and destroys the session before it returns (deinit does it if serve() never ran). See
/// OverlayFS for the locking of the shared state.
///
/// ## Known limits
/// - A file opened read-only before it is copied up keeps reading the lower data (and one
///   opened before a rebase moved it out of the upper directory, the copy it opened).
/// - Names that are not valid UTF-8 are not supported (they are skipped in listings).
/// - stop() while files under the mount are open (or processes have their cwd in it) unmounts
///   lazily; serve() returns once the kernel releases the connection.
public final class OverlayServer: @unchecked Sendable {
    let fs: OverlayFS
    private let mountpoint: String
    /// The callbacks' userdata (retained here for the life of the session) and the one lazy
    /// detach of the mount.
    private let context: ServerContext
    /// The session; nil once destroyed. Guarded by `lifecycle` for stop() vs. teardown.
    private var session: OpaquePointer?
    private let lifecycle = Mutex<(stopped: Bool, torn: Bool)>((false, false))

    /// Creates the FUSE session and mounts `view` with `upperDirectory` (existing directory) at
    /// `mountpoint` (existing empty directory). Returns once the mount is in place (requests
    /// queue until serve()).
    /// Process-wide memory settings for a process whose job is serving a mount: few malloc
    /// arenas and large buffers returned to the system when freed, so that the resident size
    /// reflects what is in use; stderr without stdio's lock (see umoci_stderr_without_lock).
    /// Call first thing in the serving process.
    public static func tuneProcessForServing() {
        umoci_tune_malloc_for_server()
        umoci_stderr_without_lock()
    }

    public init(view: MergedView, upperDirectory: String, mountpoint: String, options: MountOptions) throws(StoreError) {
        if access("/dev/fuse", R_OK | W_OK) != 0 {
            throw StoreError("cannot use /dev/fuse (\(String(cString: strerror(errno)))): FUSE is not available here")
        }
        guard Files.isDirectory(upperDirectory) else { throw StoreError("upper directory \(upperDirectory) is not a directory") }
        guard Files.isDirectory(mountpoint) else { throw StoreError("mountpoint \(mountpoint) is not a directory") }
        let fs = try OverlayFS(view: view, upperDirectory: upperDirectory, ownership: options.ownership)
        self.fs = fs
        self.mountpoint = mountpoint
        let context = ServerContext(fs: fs, detacher: MountDetacher(mountpoint: mountpoint, following: options.following))
        self.context = context
        threads = UInt32(max(1, options.threads))

        // fusermount3 mounts an unprivileged user's nosuid,nodev whatever it is asked.
        var mountOptions = "default_permissions,\(geteuid() == 0 ? "suid," : "")nodev,fsname=umoci,subtype=umoci"
        if options.allowOther { mountOptions += ",allow_other" }
        var argv = ["umoci", "-o", mountOptions]
        if options.debug { argv.append("-d") }
        let cStrings = argv.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var pointers = cStrings
        var ops = makeOperations()
        let se: OpaquePointer? = pointers.withUnsafeMutableBufferPointer { buf in
            var args = fuse_args(argc: Int32(buf.count), argv: buf.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            return umoci_fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size,
                                          Unmanaged.passUnretained(context).toOpaque())
        }
        guard let se else { throw StoreError("cannot create the FUSE session (mount options \(mountOptions))") }
        if fuse_session_mount(se, mountpoint) != 0 {
            fuse_session_destroy(se)
            throw StoreError("cannot mount FUSE at \(mountpoint) (see the message above; needs root or fusermount3)")
        }
        session = se
        fs.session = se
    }

    private let threads: UInt32

    deinit {
        teardown()
    }

    /// Serves requests on a multithreaded loop until the filesystem is unmounted or stop() is
    /// called; unmounts and destroys the session before returning.
    public func serve() throws(StoreError) {
        let stopped = lifecycle.withLock { $0.stopped || $0.torn }
        var result: Int32 = 0
        if !stopped, let se = session {
            result = umoci_fuse_session_loop_mt(se, 0, threads)
        }
        let wasStopped = lifecycle.withLock { $0.stopped }
        teardown()
        writeRequestSummary()
        // A connection the kernel aborted after the mount detached itself is the normal end.
        let detached = context.detacher.isDetached
        if result != 0 && !wasStopped && result != -ENODEV && !(detached && result == -ECONNABORTED) {
            throw StoreError("serving the FUSE mount at \(mountpoint) failed: \(String(cString: strerror(abs(result))))")
        }
    }

    /// Ends serve() from any thread: marks the session exited and unmounts (lazily), which
    /// aborts the connection and wakes the loop.
    public func stop() {
        lifecycle.withLock { s in
            guard !s.torn, let se = session else { s.stopped = true; return }
            s.stopped = true
            fuse_session_exit(se)
            context.detacher.detach("stopped", notify: false)
        }
    }

    /// How many requests of kind `r` the kernel sent so far (see Request); from any thread.
    public func requestCount(_ r: Request) -> UInt64 { context.counts.value(r) }

    /// The nonzero request counts as `kind=N` words (for the server's debug log).
    public var requestSummary: String {
        Request.allCases.compactMap { r in requestCount(r) == 0 ? nil : "\(r.name)=\(requestCount(r))" }.joined(separator: " ")
    }

    /// With UMOCI_FUSE_COUNTS=FILE in the server's environment, appends the mount point and
    /// requestSummary to FILE once serving ends (how the benchmark scripts count round trips).
    private func writeRequestSummary() {
        guard let path = getenv("UMOCI_FUSE_COUNTS").map({ String(cString: $0) }), !path.isEmpty else { return }
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var line = "\(mountpoint) \(requestSummary)\n"
        line.withUTF8 { _ = write(fd, $0.baseAddress, $0.count) }
    }

    /// Detaches the mount lazily (once) and goes on serving what is still open under it;
    /// serve() returns when the kernel releases the file system. From any thread.
    public func detach(reason: String) {
        context.detacher.detach(reason)
    }

    private func teardown() {
        let se: OpaquePointer? = lifecycle.withLock { s in
            if s.torn { return nil }
            s.torn = true
            defer { session = nil }
            return session
        }
        guard let se else { return }
        // Once detached, the mount point's path may name something else by now (the owner's
        // directory deleted and made again): only destroy, which closes the connection.
        if !context.detacher.isDetached { fuse_session_unmount(se) }
        fuse_session_destroy(se)
    }
}

extension OverlayServer {
    /// Makes `view` the lower layer while mounted (`repack --refresh-bundle`), for a view built
    /// from the current one plus a layer packed from the upper directory; `packed` holds the
    /// stamps of what that layer was made from. What is still exactly as packed leaves the
    /// upper directory for `trashDirectory` (an existing directory on the upper directory's
    /// file system, which the caller deletes afterwards); `commit` receives the stamps of what
    /// stays unchanged before anything moves. The mount shows the same tree, with the same
    /// st_ino, before and after; open files keep working. See OverlayFS.rebase.
    public func rebase(onto view: MergedView, packed: UpperBaseline, trashDirectory: String,
                       commit: (UpperBaseline) throws(StoreError) -> Void) throws(StoreError) -> RebaseReport {
        let trash = Glibc.open(trashDirectory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if trash < 0 { throw .system("open", trashDirectory) }
        defer { close(trash) }
        return try fs.rebase(onto: view, packed: packed, trash: trash, commit: commit)
    }
}
