import ArgumentParser
import Basics
import OCI

extension Umoci {
    struct Tag: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "tag", abstract: "creates a new tag in an OCI image",
            discussion: "usage: umoci tag --image <image-path>[:<tag>] <new-tag>")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: ImageOptions
        @Argument(help: "the new tag") var arguments: [String] = []

        func run() throws {
            let ref = try image.reference()
            try expectArguments(arguments, 1, "<new-tag>")
            let newTag = arguments[0]
            guard !newTag.isEmpty else { throw UsageError("new tag cannot be empty") }
            guard ImageReference.isValidTag(newTag) else { throw UsageError("new tag is an invalid reference: \(quoted: newTag)") }
            try ImageLayout.withLocked(ref.layout, .exclusive) { layout in
                let target = try layout.resolveTarget(tag: ref.tag)
                try layout.setTag(newTag, to: target.root)
            }
            Log.info("created new tag: \"\(newTag)\" -> \"\(ref.tag)\"")
        }
    }

    struct Remove: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove", abstract: "removes a tag from an OCI image", aliases: ["rm"])

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: ImageOptions
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            let ref = try image.reference()
            _ = try ImageLayout.withLocked(ref.layout, .exclusive) { layout in
                try layout.removeTag(ref.tag)
            }
            Log.info("removed tag: \(ref.tag)")
        }
    }

    struct List: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "lists the set of tags in an OCI layout", aliases: ["ls"])

        @OptionGroup var global: GlobalOptions
        @OptionGroup var layout: LayoutOptions
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            let tags = try ImageLayout.withLocked(try layout.path(), .shared) { try $0.tags() }
            for tag in tags { print(tag) }
        }
    }

    struct GC: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc", abstract: "garbage-collects an OCI image's blobs")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var layout: LayoutOptions
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            let removed = try ImageLayout.withLocked(try layout.path(), .exclusive) { layout in
                do {
                    return try layout.garbageCollect()
                } catch let error as StoreError {
                    throw StoreError("gc: \(error.message)")
                }
            }
            for path in removed { Log.debug("garbage-collected \(path)") }
        }
    }
}
