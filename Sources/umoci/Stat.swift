import ArgumentParser
import Basics
import OCI

#if canImport(Glibc)
import Glibc
#endif

extension Umoci {
    struct Stat: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "stat", abstract: "displays status information of an image manifest")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: SourceImageOptions
        @Flag(name: .customLong("json"), help: "output the stat information as a JSON encoded blob")
        var json = false
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            _ = try image.location()
            // A registry image's manifest and config are all stat reads: no layer is fetched.
            let prepared = try image.prepare(cache: SourceImageOptions.defaultCache(), layers: false)
            let stat = try ImageLayout.withLocked(prepared.layout, .shared) { layout in
                try layout.statImage(prepared.descriptorPath(in: layout))
            }
            let out = json ? Array((stat.json.text + "\n").utf8) : StatText(stat).bytes
            try Files.writeAll(STDOUT_FILENO, out, path: "standard output")
        }
    }
}
