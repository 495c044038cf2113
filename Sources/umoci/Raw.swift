import ArgumentParser

extension Umoci {
    struct Raw: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "raw", abstract: "advanced internal image tooling",
            subcommands: [RuntimeConfig.self, RawUnpack.self, RawAddLayer.self, RawMtreeValidate.self])
    }
}
