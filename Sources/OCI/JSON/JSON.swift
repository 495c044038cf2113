// A JSON value that keeps everything it was given: object members stay in their order and
// numbers keep their literal text. The OCI types are typed views over these values, so that a
// read-modify-write of a config, manifest or index never loses a field this tool does not model.

public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's literal text, exactly as parsed (or as produced by `JSON.int`).
    case number(String)
    case string(String)
    case array([JSON])
    case object(JSONObject)

    public static func int<I: BinaryInteger>(_ value: I) -> JSON { .number(String(value)) }

    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var int64: Int64? {
        if case .number(let n) = self { return Int64(n) }
        return nil
    }

    public var array: [JSON]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var object: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// An array of strings, or nil when this is not an array made only of strings.
    public var strings: [String]? {
        guard let a = array else { return nil }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for v in a {
            guard let s = v.string else { return nil }
            out.append(s)
        }
        return out
    }

    public static func strings(_ values: [String]) -> JSON { .array(values.map { .string($0) }) }
}

/// A JSON object whose members keep their order. Setting an existing key replaces its value in
/// place; a new key is appended; setting nil removes the key.
public struct JSONObject: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public var key: String
        public var value: JSON
    }

    public private(set) var members: [Member]

    public init() { members = [] }

    public init(_ pairs: KeyValuePairs<String, JSON>) {
        members = pairs.map { Member(key: $0.key, value: $0.value) }
    }

    init(members: [Member]) { self.members = members }

    public var isEmpty: Bool { members.isEmpty }
    public var count: Int { members.count }
    public var keys: [String] { members.map(\.key) }

    public subscript(key: String) -> JSON? {
        get { members.last(where: { $0.key == key })?.value }
        set {
            if let value = newValue {
                if let i = members.lastIndex(where: { $0.key == key }) {
                    members[i].value = value
                    // A key duplicated in parsed input: the last one wins, so keep just that one.
                    if members.firstIndex(where: { $0.key == key }) != i {
                        members = members.enumerated()
                            .filter { $0.offset == i || $0.element.key != key }
                            .map(\.element)
                    }
                } else {
                    members.append(Member(key: key, value: value))
                }
            } else {
                members.removeAll { $0.key == key }
            }
        }
    }

    /// The object member at `key`, created empty when missing or not an object.
    public subscript(object key: String) -> JSONObject {
        get { self[key]?.object ?? JSONObject() }
        set { self[key] = .object(newValue) }
    }

    /// Members sorted by key: how Go marshals a map.
    public func sortedByKey() -> JSONObject {
        JSONObject(members: members.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) })
    }
}

extension JSONObject {
    /// Sets `key`, and when it is new, inserts it where `order` (the field order of the Go
    /// struct the object mirrors) puts it among the keys already present; unknown keys keep
    /// their places. Setting nil removes the key.
    public mutating func set(_ key: String, _ value: JSON?, order: [String]) {
        guard let value, self[key] == nil, let rank = order.firstIndex(of: key) else {
            self[key] = value
            return
        }
        func rankOf(_ m: Member) -> Int? { order.firstIndex(of: m.key) }
        // After the last known key that comes before it, else before the first that comes after.
        let insertAt: Int
        if let before = members.lastIndex(where: { rankOf($0).map { $0 < rank } ?? false }) {
            insertAt = before + 1
        } else {
            insertAt = members.firstIndex(where: { rankOf($0).map { $0 > rank } ?? false }) ?? members.count
        }
        members.insert(Member(key: key, value: value), at: insertAt)
    }
}
