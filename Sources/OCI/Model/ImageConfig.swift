import Basics
/// An image configuration (image-spec/config.md), as a view over its JSON: every field this
/// tool does not model survives a read-modify-write.
public struct ImageConfig: Sendable, Equatable {
    public var json: JSONObject

    public init(json value: JSON, digest: Digest) throws(StoreError) {
        guard let object = value.object else { throw StoreError(.corrupt, "config \(digest) is not a JSON object") }
        if let rootfs = object["rootfs"], rootfs.object == nil {
            throw StoreError(.corrupt, "config \(digest) has an invalid rootfs")
        }
        self.json = object
    }

    /// The config `umoci new` writes: no layers, no history, the given platform.
    public init(created: String, architecture: String, os: String) {
        var json = JSONObject()
        json["created"] = .string(created)
        json["architecture"] = .string(architecture)
        json["os"] = .string(os)
        json["config"] = .object(JSONObject())
        json["rootfs"] = .object(JSONObject(["type": .string("layers"), "diff_ids": .array([])]))
        self.json = json
    }

    /// Field order of image-spec's `Image` struct, which Go (and so umoci) writes.
    public static let fieldOrder = ["created", "author", "architecture", "os", "os.version", "os.features",
                                    "variant", "config", "rootfs", "history"]
    /// Field order of image-spec's `ImageConfig` struct (the `config` member).
    public static let runConfigFieldOrder = ["User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes",
                                             "WorkingDir", "Labels", "StopSignal", "ArgsEscaped"]

    private func string(_ key: String) -> String? { json[key]?.string }
    /// Empty strings are omitted, as Go's `omitempty` does.
    private mutating func set(_ key: String, _ value: String?) {
        json.set(key, (value?.isEmpty ?? true) ? nil : .string(value!), order: ImageConfig.fieldOrder)
    }

    public var created: String? { get { string("created") } set { set("created", newValue) } }
    public var author: String? { get { string("author") } set { set("author", newValue) } }
    public var architecture: String { get { string("architecture") ?? "" } set { json.set("architecture", .string(newValue), order: ImageConfig.fieldOrder) } }
    public var os: String { get { string("os") ?? "" } set { json.set("os", .string(newValue), order: ImageConfig.fieldOrder) } }
    public var variant: String? { get { string("variant") } set { set("variant", newValue) } }

    /// The execution parameters (`config` member): User, Env, Entrypoint, Cmd, ...
    public var runConfig: JSONObject {
        get { json[object: "config"] }
        set { json.set("config", .object(newValue), order: ImageConfig.fieldOrder) }
    }

    public var diffIDs: [String] {
        json["rootfs"]?.object?["diff_ids"]?.strings ?? []
    }

    public mutating func appendDiffID(_ id: Digest) {
        var rootfs = json[object: "rootfs"]
        if rootfs["type"] == nil { rootfs["type"] = .string("layers") }
        rootfs["diff_ids"] = .strings(diffIDs + [id.description])
        json.set("rootfs", .object(rootfs), order: ImageConfig.fieldOrder)
    }

    public var history: [History] {
        (json["history"]?.array ?? []).map { History(json: $0.object ?? JSONObject()) }
    }

    public mutating func appendHistory(_ entry: History) {
        var entries = json["history"]?.array ?? []
        entries.append(.object(entry.json))
        json.set("history", .array(entries), order: ImageConfig.fieldOrder)
    }
}

/// One `history` entry of an image config.
public struct History: Sendable, Equatable {
    public var json: JSONObject

    public init(json: JSONObject) { self.json = json }

    public init(created: String?, createdBy: String?, author: String?, comment: String?, emptyLayer: Bool) {
        json = JSONObject()
        if let created, !created.isEmpty { json["created"] = .string(created) }
        if let createdBy, !createdBy.isEmpty { json["created_by"] = .string(createdBy) }
        if let author, !author.isEmpty { json["author"] = .string(author) }
        if let comment, !comment.isEmpty { json["comment"] = .string(comment) }
        if emptyLayer { json["empty_layer"] = .bool(true) }
    }

    public var created: String { json["created"]?.string ?? "" }
    public var createdBy: String { json["created_by"]?.string ?? "" }
    public var author: String { json["author"]?.string ?? "" }
    public var comment: String { json["comment"]?.string ?? "" }
    public var emptyLayer: Bool { json["empty_layer"]?.bool ?? false }
}
