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
        @OptionGroup var image: ImageOptions
        @Flag(name: .customLong("json"), help: "output the stat information as a JSON encoded blob")
        var json = false
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            let ref = try image.reference()
            let stat = try ImageLayout.withLocked(ref.layout, .shared) { layout in
                try layout.statImage(layout.resolveImage(tag: ref.tag))
            }
            let out = json ? Array((stat.json.text + "\n").utf8) : StatText(stat).bytes
            try Files.writeAll(STDOUT_FILENO, out, path: "standard output")
        }
    }
}
