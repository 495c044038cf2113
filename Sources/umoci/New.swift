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
            let created = try Timestamp.now(environment: Environment.variables)
            try ImageLayout.withLocked(ref.layout, .exclusive) { layout in
                let manifestBlob = try layout.newImage(tag: ref.tag, created: created)
                Log.info("new image manifest created: \(manifestBlob.digest)")
                Log.info("created new tag for image manifest: \(ref.tag)")
            }
        }
    }
}
