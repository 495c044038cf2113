#if canImport(Glibc)
import Glibc
#endif
import Basics
import BundleFormat

/// A runtime bundle as the commands see it, in one place: its files (BundlePaths), its
/// `umoci.json` and mode (BundleMetadata: mounted or extracted), the mount server's lifecycle
/// (Mounting: start, find, stop, flush), its control socket (MountControl), the server's own
/// work (MountServer: open the base, rebase), --refresh-bundle (Refresh) and how a server
/// follows its bundle when the bundle is deleted (BundleWatch). `unpack`, `mount`, `umount`,
/// `repack` and `__serve` are thin over it.
public struct RuntimeBundle: Sendable {
    public let paths: BundlePaths

    public init(_ path: String) { paths = BundlePaths(path) }

    /// Where the library's messages go (the command line's log).
    public struct Log: Sendable {
        public var info: @Sendable (String) -> Void
        public var warn: @Sendable (String) -> Void
        public init(info: @escaping @Sendable (String) -> Void, warn: @escaping @Sendable (String) -> Void) {
            self.info = info
            self.warn = warn
        }
        public func info(_ message: String) { info(message) }
        public func warn(_ message: String) { warn(message) }
    }

    public var metadata: BundleMetadata {
        get throws(StoreError) { try BundleMetadata.read(bundle: paths.bundle) }
    }

    /// Whether a live mount serves the rootfs now.
    public var isMounted: Bool { Mounting.state(of: paths.rootfs) == .live }

    /// `umoci mount`: serves the bundle's upper directory again, on its base image. Refuses an
    /// extracted bundle, a live mount, and (after a moment's wait) a server of the bundle that
    /// still serves files open under a mount that detached itself.
    public func mount(logLevel: String) throws {
        let metadata = try metadata
        guard metadata.mode == .mount else {
            throw StoreError("\(paths.bundle) is an extracted bundle (unpack --extract, or made by umoci): its rootfs is a plain directory, there is nothing to mount")
        }
        guard metadata.mount != nil else {
            throw StoreError("\(paths.metadata) has no mount information: the bundle was not made by this umoci's unpack")
        }
        switch Mounting.state(of: paths.rootfs) {
        case .live: throw StoreError("\(paths.rootfs) is already mounted")
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
        try Mounting.start(paths, logLevel: logLevel)
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
