import ArgumentParser
import BundleKit

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

        func run() throws {
            Log.level = Log.Level(rawValue: log) ?? .warn
            let readyFd = self.readyFd
            try RuntimeBundle(bundle).serve(log: Log.bundleLog) { message in
                guard readyFd >= 0 else { return }
                var line = message + "\n"
                line.withUTF8 { _ = write(readyFd, $0.baseAddress, $0.count) }
                close(readyFd)
            }
        }
    }
}
