import ArgumentParser
import Basics
import OCI

extension Umoci {
    struct Init: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "init", abstract: "create a new OCI layout")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var layout: LayoutOptions
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            let path = try layout.path()
            do {
                _ = try ImageLayout.create(at: path)
            } catch {
                throw StoreError("image layout creation: \(error.message)")
            }
            Log.info("created new OCI image: \(path)")
        }
    }
}
