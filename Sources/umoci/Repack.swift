import ArgumentParser
import BundleKit
import Basics
import OCI
import LayerView
import UpperFormat
import Extraction
import LayerWriter
import BundleFormat

extension Umoci {
    struct Repack: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "repack", abstract: "repacks an OCI runtime bundle into a reference",
            discussion: """
                usage: umoci repack --image <image-path>[:<tag>] <bundle>
                       umoci repack --image docker://<host>[:<port>]/<repo>:<tag> [--creds ...] <bundle>

                For a mounted bundle the new layer holds exactly the bundle's upper directory: \
                what changed through the mount, whiteouts included. For an extracted bundle \
                (unpack --extract, or one made by umoci) it holds what differs between rootfs/ \
                and the bundle's mtree manifest, as umoci finds it. Like umoci, repack always \
                builds on the image the bundle was unpacked from.

                A mounted bundle whose mount is gone (after a reboot) is repacked from its \
                upper directory, which holds every change, with a warning: `umoci mount \
                <bundle>` mounts it again.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: SourceImageOptions
        @OptionGroup var history: HistoryOptions
        @OptionGroup var compression: CompressionOption
        @Option(name: .customLong("mask-path"), help: "a path to leave out of the layer (repeatable)") var maskPaths: [String] = []
        @Flag(name: .customLong("no-mask-volumes"), help: "include the image's volumes in the layer") var noMaskVolumes = false
        @Flag(name: .customLong("refresh-bundle"), help: "make the new image the bundle's base afterwards")
        var refreshBundle = false
        @Argument(help: "the bundle") var arguments: [String] = []

        func run() throws {
            if case .registry = try image.location(), refreshBundle {
                throw UsageError("--refresh-bundle with a docker:// --image is not supported yet: repack into a layout to refresh the bundle")
            }
            try expectArguments(arguments, 1, "<bundle>")
            guard !arguments[0].isEmpty else { throw UsageError("bundle path cannot be empty") }
            try history.check()
            let image = self.image
            var repack = BundleRepack(target: { try RepackDestination(image, metadata: $0) },
                                      bundle: RuntimeBundle(arguments[0]), log: Log.bundleLog)
            repack.compression = try compression.choice()
            repack.maskPaths = maskPaths
            repack.maskVolumes = !noMaskVolumes
            repack.refreshBundle = refreshBundle
            repack.mtimeClamp = try Timestamp.sourceDateEpoch(environment: Environment.variables)
            repack.history = { author, emptyLayer in
                try history.entry(createdBy: "umoci repack", author: author, emptyLayer: emptyLayer)
            }
            try repack.run()
        }
    }
}

/// --compress, for the commands that write layers.
struct CompressionOption: ParsableArguments {
    @Option(name: .customLong("compress"), help: "layer compression: auto (the latest compressed layer's, else gzip), gzip, zstd or none")
    var compress: String = "auto"

    /// nil for auto.
    func choice() throws -> LayerCompression? {
        switch compress {
        case "auto": return nil
        case "gzip": return .gzip
        case "zstd": return .zstd
        case "none": return LayerCompression.none
        default: throw UsageError("invalid --compress: unknown layer compression type \"\(compress)\" (auto, gzip, zstd or none)")
        }
    }
}
