import ArgumentParser
import Dispatch
import FuseFS
import LayerStore

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
            do {
                let metadata = try BundleMetadata.read(bundle: paths.bundle)
                guard let mount = metadata.mount else { throw StoreError("\(paths.metadata) has no mount information") }
                let view = try ImageLayout.withLocked(mount.layout, .shared) { layout in
                    let image = try layout.loadImage(metadata.fromDescriptorPath())
                    return try MergedView.open(layout: layout, image: image, cache: IndexCache(directory: mount.cacheDirectory),
                                               options: MergedView.Options(keepDirlinks: mount.keepDirlinks,
                                                                           regionCacheBytes: Serve.regionCacheBytes))
                }
                server = try OverlayServer(view: view, upperDirectory: paths.upper, mountpoint: paths.rootfs, options: MountOptions())
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
                unlink(paths.pid)
                _ = signals
            }
            try server.serve()
            Log.info("unmounted \(paths.rootfs)")
        }
    }
}
