import ArgumentParser
import OCI
import LayerView
import Extraction

extension Umoci {
    struct RawUnpack: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "unpack", abstract: "unpacks a reference into a rootfs",
            discussion: "usage: umoci raw unpack --image <image-path>[:<tag>] <rootfs>")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: SourceImageOptions
        @OptionGroup var layers: LayerOptions
        @Argument(help: "the directory to extract the root filesystem into") var arguments: [String] = []

        func run() throws {
            _ = try image.location()
            try expectArguments(arguments, 1, "<rootfs>")
            guard !arguments[0].isEmpty else { throw UsageError("rootfs path cannot be empty") }
            let rootfs = arguments[0]
            let cache = layers.cache()
            let prepared = try image.prepare(cache: cache, layers: true)
            try ImageLayout.withLocked(prepared.layout, .shared) { layout in
                let img = try prepared.load(layout)
                let view = try MergedView.open(layout: layout, image: img, cache: cache, options: layers.viewOptions())
                Log.info("unpacking rootfs ...")
                try RootfsExtractor.extract(view, to: rootfs)
                Log.info("... done")
            }
        }
    }
}

/// Flags of the commands that read layers.
struct LayerOptions: ParsableArguments {
    @Flag(name: .customLong("keep-dirlinks"),
          help: "don't replace a symlink to a directory with a directory from a layer; put the layer's contents into the symlink's target")
    var keepDirlinks = false

    @Option(name: .customLong("cache-dir"), help: "where layer indexes are kept (default: $UMOCI_CACHE_DIR, $XDG_CACHE_HOME/umoci, ~/.cache/umoci)")
    var cacheDir: String?

    func cache() -> IndexCache {
        let environment = Environment.variables
        return IndexCache.usable(directory: cacheDir ?? IndexCache.defaultDirectory(environment: environment),
                                 environment: environment, warn: { Log.warn($0) })
    }

    func viewOptions() -> MergedView.Options {
        MergedView.Options(keepDirlinks: keepDirlinks)
    }
}
