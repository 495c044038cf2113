import ArgumentParser
import Basics
import OCI

extension Umoci {
    struct New: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "new", abstract: "creates a blank tagged OCI image")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: ImageOptions
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            let ref = try image.reference()
            try ImageLayout.withLocked(ref.layout, .exclusive) { layout in
                let config = ImageConfig(
                    created: try Timestamp.now(environment: Environment.variables),
                    architecture: Platform.architecture, os: Platform.os)
                let configBlob = try layout.putJSONBlob(config.json, mediaType: MediaType.imageConfig)
                let manifest = Manifest(config: configBlob, layers: [])
                let manifestBlob = try layout.putJSONBlob(manifest.json, mediaType: MediaType.imageManifest)
                try layout.setTag(ref.tag, to: manifestBlob)
                Log.info("new image manifest created: \(manifestBlob.digest)")
                Log.info("created new tag for image manifest: \(ref.tag)")
            }
        }
    }
}

/// The platform this binary runs on, in GOARCH/GOOS terms as the image-spec uses them.
enum Platform {
    static var architecture: String {
        #if arch(x86_64)
        return "amd64"
        #elseif arch(arm64)
        return "arm64"
        #elseif arch(i386)
        return "386"
        #elseif arch(arm)
        return "arm"
        #elseif arch(powerpc64le)
        return "ppc64le"
        #elseif arch(s390x)
        return "s390x"
        #else
        return "unknown"
        #endif
    }

    static let os = "linux"
}
