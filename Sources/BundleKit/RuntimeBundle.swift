#if canImport(Glibc)
import Glibc
#endif
import Basics
import BundleFormat

/// A runtime bundle as the commands see it, in one place: its files (BundlePaths), its
/// `umoci.json` and mode (BundleMetadata: mounted or extracted) and how its rootfs stands
/// (RootfsState), the steps that make and pack it (BundleUnpack, BundleRepack), the mount
/// server's lifecycle (Mounting: start, find, stop, flush), its control socket
/// (MountControl), the server itself (MountServer: serve, open the base, rebase),
/// --refresh-bundle (Refresh) and how a server follows its bundle when the bundle is deleted
/// (BundleWatch). `unpack`, `mount`, `umount`, `repack` and `__serve` are glue over it: they
/// parse flags, call one of these and print.
public struct RuntimeBundle: Sendable {
    public let paths: BundlePaths

    public init(_ path: String) { paths = BundlePaths(path) }

    /// Refuses a bundle directory that holds a bundle already (BundleUnpack checks it first;
    /// a caller that fetches the image from a registry, before fetching).
    public func checkIsNew() throws {
        let paths = self.paths
        for existing in [paths.config, paths.rootfs, paths.metadata] where Files.exists(existing) {
            var message = "create runtime bundle: \(existing) already exists"
            if let metadata = try? self.metadata, case let state = rootfsState(metadata),
               state == .notMounted || state == .serverGone {
                message += " (\(notMountedAdvice(state)))"
            }
            throw StoreError(.alreadyExists, message, subject: existing)
        }
    }

    /// Where the library's messages go (the command line's log).
    public struct Log: Sendable {
        public var info: @Sendable (String) -> Void
        public var warn: @Sendable (String) -> Void
        /// A failure that does not end the step (the server's failed rebase); a warning unless given.
        public var error: @Sendable (String) -> Void
        public init(info: @escaping @Sendable (String) -> Void, warn: @escaping @Sendable (String) -> Void,
                    error: (@Sendable (String) -> Void)? = nil) {
            self.info = info
            self.warn = warn
            self.error = error ?? warn
        }
        public func info(_ message: String) { info(message) }
        public func warn(_ message: String) { warn(message) }
        public func error(_ message: String) { error(message) }
    }

    public var metadata: BundleMetadata {
        get throws(StoreError) { try BundleMetadata.read(bundle: paths.bundle) }
    }

    /// Whether a live mount serves the rootfs now.
    public var isMounted: Bool { Mounting.state(of: paths.rootfs) == .live }

    /// How the bundle's rootfs stands: what every command on the bundle decides by.
    public enum RootfsState: Sendable, Equatable {
        /// A plain directory (unpack --extract, or made by umoci).
        case extracted
        /// Served by a live mount server.
        case mounted
        /// A mounted-mode bundle with nothing mounted on rootfs/: after a reboot, or umount.
        /// Its changes are all in upper/; the rootfs is an empty directory.
        case notMounted
        /// A mounted-mode bundle whose mount's server died ("Transport endpoint is not
        /// connected"); its changes are all in upper/.
        case serverGone
    }

    /// The state of the rootfs of a bundle whose umoci.json says `metadata`.
    public func rootfsState(_ metadata: BundleMetadata) -> RootfsState {
        guard metadata.mode == .mount else { return .extracted }
        switch Mounting.state(of: paths.rootfs) {
        case .live: return .mounted
        case .notMounted: return .notMounted
        case .dead: return .serverGone
        }
    }

    /// What tells the user of a mounted-mode bundle whose mount is not served how to bring it
    /// back (after a reboot its rootfs is an empty directory, and runc fails on it with
    /// `exec: "sh": executable file not found`).
    public func notMountedAdvice(_ state: RootfsState) -> String {
        let why = state == .serverGone ? "its mount server is gone" : "its mount server is not running (after a reboot, or umoci umount)"
        return "\(paths.rootfs) is not mounted: \(why); umoci mount \(paths.bundle) mounts it again"
    }

    /// The stray-rootfs check, for a mounted-mode bundle that is not mounted: the mount
    /// detaches itself when its root is emptied through it (the bundle is being deleted, or
    /// its content moved out), and files put into the plain directory afterwards are not in
    /// upper/: a layer made from upper/ would silently leave them out.
    public func checkNoStrayEntries() throws(StoreError) {
        guard let entries = try? Files.list(paths.rootfs), !entries.isEmpty else { return }
        throw StoreError(.invalidInput, "\(paths.rootfs) is not mounted but holds \(entries.count) entries that repack cannot see (the mount detaches itself once its root is emptied): move them out, run umoci mount \(paths.bundle), and put them back", subject: paths.rootfs)
    }

    /// `umoci mount`: serves the bundle's upper directory again, on its base image. Refuses an
    /// extracted bundle, a live mount, and (after a moment's wait) a server of the bundle that
    /// still serves files open under a mount that detached itself.
    public func mount(logLevel: String, serverExecutable: String = Mounting.selfExecutable()) throws {
        let metadata = try metadata
        guard metadata.mode == .mount else {
            throw StoreError(.unsupported, "\(paths.bundle) is an extracted bundle (unpack --extract, or made by umoci): its rootfs is a plain directory, there is nothing to mount", subject: paths.bundle)
        }
        guard metadata.mount != nil else {
            throw StoreError(.unsupported, "\(paths.metadata) has no mount information: the bundle was not made by this umoci's unpack", subject: paths.bundle)
        }
        switch Mounting.state(of: paths.rootfs) {
        case .live: throw StoreError(.busy, "\(paths.rootfs) is already mounted", subject: paths.rootfs)
        case .dead: Mounting.cleanUpDeadMount(paths.rootfs)
        case .notMounted:
            // A server whose mount detached itself serves what is still open under it; two
            // servers must never share one upper directory. One that just detached exits once
            // the kernel lets the file system go: give it a moment (a busy machine takes a while).
            var waited = 0
            while !Mounting.serverProcesses(paths).isEmpty && waited < 40 {
                usleep(50_000)
                waited += 1
            }
            if let old = Mounting.serverProcesses(paths).first {
                throw StoreError("the previous mount server of \(paths.bundle) (pid \(old)) still serves files open under its detached mount: close them (or kill it) first")
            }
        }
        try Files.makeDirectory(paths.upper)
        try Files.makeDirectory(paths.rootfs)
        try Mounting.start(paths, logLevel: logLevel, executable: serverExecutable)
    }

    /// `umoci umount`: unmounts and stops the server. false for an extracted bundle (nothing
    /// to unmount). Works when umoci.json, the pid file or upper/ are gone already (the mount
    /// is found through /proc/self/mountinfo).
    public func unmount() throws -> Bool {
        guard Files.isDirectory(paths.bundle) else { throw StoreError("\(paths.bundle) is not a directory") }
        if (try? metadata)?.mode == .extract { return false }
        try Mounting.stop(paths)
        return true
    }
}
