import ArgumentParser
import Basics
import OCI
import Registry

#if canImport(Glibc)
import Glibc
#endif

/// `--image PATH[:TAG]`, shared by the commands that work on one image.
struct ImageOptions: ParsableArguments {
    @Option(name: .customLong("image"), help: "OCI image URI of the form 'path[:tag]'")
    var image: String?

    /// A layout image (`path[:tag]` or `oci:path[:tag]`); a docker:// image is refused here:
    /// only the commands with `SourceImageOptions` read from a registry.
    func reference() throws -> ImageReference {
        guard let image else { throw UsageError("missing mandatory argument: --image") }
        let location: ImageLocation
        do { location = try ImageLocation(parsing: image) } catch { throw UsageError(error.message) }
        switch location {
        case .layout(let reference): return reference
        case .registry:
            throw UsageError("--image \(image): this command works on a local layout (unpack, raw unpack, stat and raw runtime-config read docker:// images)")
        }
    }
}

/// `--layout PATH`, shared by the commands that work on a whole layout.
struct LayoutOptions: ParsableArguments {
    @Option(name: .customLong("layout"), help: "path to an OCI image layout")
    var layout: String?

    func path() throws -> String {
        guard let layout else { throw UsageError("missing mandatory argument: --layout") }
        try validateLayoutPath(layout)
        return layout
    }
}

/// The history flags of every command that writes a history entry.
struct HistoryOptions: ParsableArguments {
    @Flag(name: .customLong("no-history"), help: "do not create a history entry")
    var noHistory = false

    @Option(name: .customLong("history.author"), help: "author value for the history entry")
    var author: String?

    @Option(name: .customLong("history.comment"), help: "comment for the history entry")
    var comment: String?

    @Option(name: .customLong("history.created"), help: "created value for the history entry")
    var created: String?

    @Option(name: .customLong("history.created_by"), help: "created_by value for the history entry")
    var createdBy: String?

    /// Rejects conflicting or malformed flags before anything is written.
    func check() throws {
        if noHistory {
            for (flag, value) in [("--history.comment", comment), ("--history.author", author),
                                  ("--history.created", created), ("--history.created_by", createdBy)] where value != nil {
                throw UsageError("--no-history and \(flag) may not be specified together")
            }
        }
        if let created, Timestamp.normalize(created) == nil {
            throw UsageError("parsing --history.created: \(quoted: created) is not an RFC 3339 timestamp")
        }
    }

    /// The entry to append, or nil with `--no-history`. `author` defaults to the image's author.
    func entry(createdBy defaultCreatedBy: String, author defaultAuthor: String?, emptyLayer: Bool) throws -> History? {
        try check()
        if noHistory { return nil }
        let now = try Timestamp.now(environment: Environment.variables)
        return History(
            created: created.flatMap(Timestamp.normalize) ?? now,
            createdBy: createdBy ?? defaultCreatedBy,
            author: author ?? defaultAuthor,
            comment: comment,
            emptyLayer: emptyLayer)
    }
}

enum Environment {
    static var variables: [String: String] {
        var out: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return out
    }
}

/// Refuses positional arguments a command does not take, with umoci's message.
func expectArguments(_ arguments: [String], _ count: Int, _ names: String) throws {
    if arguments.count != count {
        throw UsageError("invalid number of positional arguments: expected \(names)")
    }
}

/// Refuses empty positional arguments, with umoci's message.
func expectNonEmpty(_ arguments: [String]) throws {
    if let i = arguments.firstIndex(of: "") {
        throw UsageError("invalid positional argument \(i): arguments cannot be empty")
    }
}

