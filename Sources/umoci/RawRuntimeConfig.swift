import ArgumentParser
import Basics
import OCI

extension Umoci {
    struct RuntimeConfig: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "runtime-config",
            abstract: "generates an OCI runtime configuration for an image",
            discussion: "usage: umoci raw runtime-config --image <image-path>[:<tag>] [--rootfs <rootfs>] <config.json>",
            aliases: ["config"])

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: SourceImageOptions
        @Option(name: .customLong("rootfs"), help: "path to a rootfs whose /etc/passwd and /etc/group resolve the image's user")
        var rootfs: String?
        @Argument(help: "the config.json to write") var arguments: [String] = []

        func run() throws {
            _ = try image.location()
            try expectArguments(arguments, 1, "<config.json>")
            guard !arguments[0].isEmpty else { throw UsageError("config.json path cannot be empty") }
            let output = arguments[0]
            let prepared = try image.prepare(cache: SourceImageOptions.defaultCache(), layers: false)
            let config = try ImageLayout.withLocked(prepared.layout, .shared) { try prepared.load($0).config }
            let spec = try RuntimeSpec.generate(
                config: config, rootfs: rootfs, rootPath: rootfs.map(baseName) ?? ".", warn: { Log.warn($0) })
            // Written whole or not at all: a failure never leaves a truncated config.json.
            try Files.writeAtomically(output, JSON.object(spec).serialized(indent: "\t") + [0x0A])
        }
    }
}

/// The last component of a path, as Go's filepath.Base returns it.
func baseName(_ path: String) -> String {
    if path.isEmpty { return "." }
    guard let last = path.split(separator: "/").last else { return "/" }
    return String(last)
}
