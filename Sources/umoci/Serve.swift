import ArgumentParser
import Dispatch
import FuseFS
import BundleKit
import Synchronization
import Basics
import BundleFormat

#if canImport(Glibc)
import Glibc
#endif

extension Umoci {
    /// The mount server of a bundle (started by unpack and mount; not for direct use).
    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "__serve", shouldDisplay: false)

        @Argument var bundle: String
        @Option(name: .customLong("ready-fd")) var readyFd: Int32 = -1
        @Option(name: .customLong("log")) var log: String = "warn"

        /// Inflated gzip regions kept by the server: enough for the working set of a few
        /// readers, within the server's memory target (see docs/benchmarks.md).
        static let regionCacheBytes = 32 << 20

        func run() throws {
            OverlayServer.tuneProcessForServing()
            Log.level = Log.Level(rawValue: log) ?? .warn
            let paths = BundlePaths(bundle)
            func ready(_ message: String) {
                guard readyFd >= 0 else { return }
                var line = message + "\n"
                line.withUTF8 { _ = write(readyFd, $0.baseAddress, $0.count) }
                close(readyFd)
            }
            let server: OverlayServer
            let watch: BundleWatch
            do {
                // The mount follows its bundle: deleting the bundle detaches it (see BundleWatch).
                watch = try BundleWatch(paths)
                var options = MountOptions()
                if geteuid() != 0 {
                    // An unprivileged user's server (a rootless or mapped unpack): fusermount3
                    // mounts, allow_other only where /etc/fuse.conf lets users ask for it.
                    let maps = try BundleMetadata.read(bundle: paths.bundle).mapOptions
                    options.ownership = MountOwnership(uidMappings: maps.uidMappings, gidMappings: maps.gidMappings)
                    options.allowOther = RuntimeBundle.userAllowOther()
                }
                options.following = Following(ownerGone: { open in
                    watch.bundleGone || open.rootIsEmpty && watch.isBundleOpen(in: open.opener)
                }, detached: { reason in
                    watch.followed.store(true, ordering: .sequentiallyConsistent)
                    Log.info("detaching the mount: \(reason); exiting once it is released")
                })
                server = try OverlayServer(view: RuntimeBundle.openBase(paths, regionCacheBytes: Serve.regionCacheBytes, log: Log.bundleLog), upperDirectory: paths.upper, mountpoint: paths.rootfs,
                                           options: options)
                // Optional: the synchronous checks cover every deleter that goes through the
                // mount; inotify instances are limited (fs.inotify.max_user_instances).
                do { try watch.watch { server.detach(reason: $0) } } catch { Log.warn("not watching the bundle: \(error)") }
                try MountControl.serve(paths) { request in
                    guard request == "rebase" else { return "error unknown request \(quoted: request)" }
                    guard !watch.bundleGone else { return "error the bundle is being deleted" }
                    do {
                        let report = try RuntimeBundle.rebase(server, paths, regionCacheBytes: Serve.regionCacheBytes, log: Log.bundleLog)
                        return "ok moved=\(report.moved) kept=\(report.kept) pause_ms=\(Int((report.pauseSeconds * 1000).rounded()))"
                    } catch {
                        Log.error("rebase: \(error)")
                        return "error \(error)"
                    }
                }
                try Files.writeAtomically(paths.pid, Array("\(getpid())\n".utf8))
            } catch {
                ready("\(error)")
                throw error
            }
            // SIGTERM and SIGINT end serving cleanly (unmount first).
            signal(SIGTERM, SIG_IGN)
            signal(SIGINT, SIG_IGN)
            let signals = [SIGTERM, SIGINT].map { sig in
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { server.stop() }
                source.resume()
                return source
            }
            Log.info("serving \(paths.rootfs)")
            ready("ok")
            defer {
                // Once the mount followed its bundle, whoever is deleting the bundle removes
                // these (find -delete fails on a file that vanished under it).
                if !watch.followed.load(ordering: .sequentiallyConsistent) {
                    watch.unlink(paths.pid)
                    watch.unlink(paths.control)
                }
                _ = signals
            }
            try server.serve()
            Log.info("unmounted \(paths.rootfs)")
        }
    }
}
