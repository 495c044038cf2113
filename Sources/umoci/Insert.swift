import ArgumentParser
import Basics
import OCI
import LayerWriter

extension Umoci {
    struct Insert: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "insert", abstract: "insert content into an OCI image",
            discussion: """
                usage: umoci insert [--opaque] --image <image-path>[:<tag>] [--tag <new-tag>] <source> <target>
                       umoci insert --whiteout --image <image-path>[:<tag>] [--tag <new-tag>] <target>
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: ImageOptions
        @OptionGroup var history: HistoryOptions
        @OptionGroup var compression: CompressionOption
        @Option(name: .customLong("tag"), help: "new tag name (if empty, overwrite --image tag)") var tag: String?
        @Flag(name: .customLong("opaque"), help: "hide the target's existing contents (an opaque whiteout first)") var opaque = false
        @Flag(name: .customLong("whiteout"), help: "remove the target from the image") var whiteout = false
        @Argument(help: "source and target") var arguments: [String] = []

        func run() throws {
            let ref = try image.reference()
            try history.check()
            if let tag { try ImageReference.validateTag(tag) }
            // umoci's checks and messages: the count, then no empty argument.
            if whiteout {
                guard !opaque else { throw UsageError("--whiteout and --opaque may not be specified together") }
                try expectArguments(arguments, 1, "1")
            } else {
                try expectArguments(arguments, 2, "2")
            }
            try expectNonEmpty(arguments)
            if !whiteout {
                guard Files.exists(arguments[0]) else { throw StoreError("insert: source \(arguments[0]) does not exist") }
            }
            let target = cleanComponents(arguments.last!).joined(separator: "/")
            guard !target.isEmpty || (!whiteout && !opaque) else { throw UsageError("insert: target must not be the root") }
            // umoci refuses a target named like a whiteout: the layer would carry a whiteout
            // (or a whiteout of one) instead of the file. Its message, its normalised name.
            if cleanComponents(target).last?.hasPrefix(".wh.") == true {
                let name = target + (!whiteout && Files.isDirectory(arguments[0]) ? "/" : "")
                throw StoreError("add diff layer: invalid path has whiteout prefix \".wh.\": \(name)")
            }
            let requested = try compression.choice()
            try ImageLayout.withLocked(ref.layout, .exclusive) { layout in
                var img = try layout.loadImage(tag: ref.tag)
                let layerCompression = requested ?? LayerCompression.auto(for: img.manifest.layers)
                let clamp = try Timestamp.sourceDateEpoch(environment: Environment.variables)
                let (layer, _) = try LayerWriting.write(compression: layerCompression, layout: layout,
                                                        restarted: LayerWriting.logRestart) { diff throws(DirectoryDiff.Failure) in
                    diff.mtimeClamp = clamp
                    if whiteout {
                        try diff.addWhiteout(for: target)
                        return
                    }
                    if opaque { try diff.addOpaqueMarker(for: target) }
                    if target.isEmpty {
                        try diff.addContents(ofDirectory: arguments[0])
                    } else {
                        try diff.add(path: arguments[0], as: target)
                    }
                }
                img.add(layer, history: try history.entry(createdBy: "umoci insert", author: img.config.author, emptyLayer: layer == nil))
                try layout.commit(img, tag: tag ?? ref.tag)
            }
        }
    }

    struct RawAddLayer: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-layer", abstract: "add a layer archive verbatim to an image",
            discussion: "usage: umoci raw add-layer --image <image-path>[:<tag>] [--tag <new-tag>] <layer.tar>")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: ImageOptions
        @OptionGroup var history: HistoryOptions
        @OptionGroup var compression: CompressionOption
        @Option(name: .customLong("tag"), help: "new tag name (if empty, overwrite --image tag)") var tag: String?
        @Argument(help: "an uncompressed tar archive") var arguments: [String] = []

        func run() throws {
            let ref = try image.reference()
            try expectArguments(arguments, 1, "<newlayer.tar>")
            guard !arguments[0].isEmpty else { throw UsageError("<new-layer.tar> path cannot be empty") }
            try history.check()
            if let tag { try ImageReference.validateTag(tag) }
            let requested = try compression.choice()
            let source = arguments[0]
            try ImageLayout.withLocked(ref.layout, .exclusive) { layout in
                var img = try layout.loadImage(tag: ref.tag)
                let writer = try LayerBlobWriter(layout: layout, compression: requested ?? LayerCompression.auto(for: img.manifest.layers))
                do {
                    try TarCopy.copy(source, to: writer)
                } catch {
                    writer.abort()
                    throw error
                }
                let layer = try writer.finish()
                img.add(layer, history: try history.entry(createdBy: "umoci raw add-layer", author: img.config.author, emptyLayer: false))
                try layout.commit(img, tag: tag ?? ref.tag)
            }
        }
    }
}

extension LayerWriting {
    /// What the commands say when a layer is started over.
    static func logRestart(_ change: DirectoryDiff.FileChanged) { Log.info(change.restartNotice) }
}
