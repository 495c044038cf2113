import ArgumentParser
import Basics
import OCI

extension Umoci {
    struct Config: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "config", abstract: "modifies the image configuration of an OCI image",
            discussion: """
                usage: umoci config [options] --image <image-path>[:<tag>] [--tag <new-tag>]

                Where "<image-path>" is the path to the OCI image, and "<tag>" is the name of the \
                tagged image from which the config modifications will be based (if not specified, \
                it defaults to "latest"). "<new-tag>" is the new reference name to save the new \
                image as, if this is not specified then umoci will replace the old image.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: ImageOptions
        @OptionGroup var history: HistoryOptions

        @Option(name: .customLong("config.user"), parsing: .unconditional) var user: String?
        @Option(name: .customLong("config.exposedports"), parsing: .unconditionalSingleValue) var exposedPorts: [String] = []
        @Option(name: .customLong("config.env"), parsing: .unconditionalSingleValue) var env: [String] = []
        @Option(name: .customLong("config.entrypoint"), parsing: .unconditionalSingleValue) var entrypoint: [String] = []
        @Option(name: .customLong("config.cmd"), parsing: .unconditionalSingleValue) var cmd: [String] = []
        @Option(name: .customLong("config.volume"), parsing: .unconditionalSingleValue) var volumes: [String] = []
        @Option(name: .customLong("config.label"), parsing: .unconditionalSingleValue) var labels: [String] = []
        @Option(name: .customLong("config.workingdir"), parsing: .unconditional) var workingDir: String?
        @Option(name: .customLong("config.stopsignal"), parsing: .unconditional) var stopSignal: String?
        @Option(name: .customLong("created"), parsing: .unconditional) var created: String?
        @Option(name: .customLong("author"), parsing: .unconditional) var author: String?
        @Option(name: [.customLong("architecture"), .customLong("platform.arch")], parsing: .unconditional)
        var architecture: String?
        @Option(name: [.customLong("os"), .customLong("platform.os")], parsing: .unconditional) var os: String?
        @Option(name: .customLong("platform.variant"), parsing: .unconditional) var variant: String?
        @Option(name: .customLong("manifest.annotation"), parsing: .unconditionalSingleValue) var annotations: [String] = []
        @Option(name: .customLong("clear"), help: "clear a field before setting it: \(ConfigEdit.Clear.allCases.map(\.rawValue).joined(separator: ", "))")
        var clear: [String] = []
        @Option(name: .customLong("tag"), help: "new tag name (if empty, overwrite --image tag)") var tag: String?
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            let ref = try image.reference()
            // Every flag is checked before the layout is touched.
            try history.check()
            let clears = try clear.map { key throws -> ConfigEdit.Clear in
                if key == "rootfs.diffids" { throw UsageError("--clear=rootfs.diffids is not safe") }
                guard let c = ConfigEdit.Clear(rawValue: key) else { throw UsageError("unknown key to --clear: \(key)") }
                return c
            }
            let createdValue = try created.map { value throws -> String in
                guard let t = Timestamp.normalize(value) else {
                    throw UsageError("parse --created: \(quoted: value) is not an RFC 3339 timestamp")
                }
                return t
            }
            let envPairs = try env.map { try keyValue($0, flag: "config.env") }
            let labelPairs = try labels.map { try keyValue($0, flag: "config.label") }
            let annotationPairs = try annotations.map { try keyValue($0, flag: "manifest.annotation") }
            if let tag { try ImageReference.validateTag(tag) }

            var edit = ConfigEdit()
            edit.clear = clears
            edit.created = createdValue
            edit.author = author
            edit.architecture = architecture
            edit.os = os
            edit.variant = variant
            edit.user = user
            edit.stopSignal = stopSignal
            edit.workingDir = workingDir
            edit.exposedPorts = exposedPorts
            edit.volumes = volumes
            edit.env = envPairs
            edit.entrypoint = entrypoint
            edit.cmd = cmd
            edit.labels = labelPairs
            edit.annotations = annotationPairs

            try ImageLayout.withLocked(ref.layout, .exclusive) { layout in
                var img = try layout.loadImage(tag: ref.tag)
                edit.apply(to: &img)
                if let entry = try history.entry(createdBy: "umoci config", author: img.config.author, emptyLayer: true) {
                    img.config.appendHistory(entry)
                }
                let newPath = try layout.commit(img, tag: tag ?? ref.tag)
                Log.info("new image manifest created: \(newPath.root.digest)->\(newPath.manifest.digest)")
                Log.info("created new tag for image manifest: \(tag ?? ref.tag)")
            }
        }

        func keyValue(_ text: String, flag: String) throws -> (String, String) {
            guard let eq = text.firstIndex(of: "=") else { throw UsageError("\(flag): must contain '=': \(text)") }
            let name = String(text[..<eq])
            guard !name.isEmpty else { throw UsageError("\(flag): must have non-empty name: \(text)") }
            return (name, String(text[text.index(after: eq)...]))
        }
    }
}
