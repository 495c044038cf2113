#if canImport(Glibc)
import Glibc
#endif
import Basics

/// One `--uid-map`/`--gid-map` range, `container:host[:size]` (umoci's idtools.ParseMapping;
/// the runtime-spec `LinuxIDMapping`).
public struct IdMapping: Sendable, Equatable {
    public var containerID: UInt32
    public var hostID: UInt32
    public var size: UInt32

    public init(containerID: UInt32, hostID: UInt32, size: UInt32) {
        self.containerID = containerID
        self.hostID = hostID
        self.size = size
    }

    /// `container:host[:size]`, size 1 by default; `flag` names the option in errors.
    public init(parsing spec: String, flag: String) throws(StoreError) {
        let parts = spec.split(separator: ":", omittingEmptySubsequences: false)
        func number(_ part: Substring, _ what: String) throws(StoreError) -> UInt32 {
            guard let value = UInt32(part) else {
                throw StoreError(.invalidInput, "failure parsing \(flag) \(spec): invalid \(what) in mapping: \(String(reflecting: String(part))) is not a number from 0 to 4294967295")
            }
            return value
        }
        guard parts.count == 2 || parts.count == 3 else {
            throw StoreError(.invalidInput, "failure parsing \(flag) \(spec): invalid number of fields in mapping \(String(reflecting: spec)): \(parts.count) (container:host[:size])")
        }
        containerID = try number(parts[0], "containerID")
        hostID = try number(parts[1], "hostID")
        size = parts.count == 3 ? try number(parts[2], "size") : 1
    }

    /// As runtime-spec marshals it (field order containerID, hostID, size).
    public var json: JSON {
        .object(JSONObject(["containerID": .int(containerID), "hostID": .int(hostID), "size": .int(size)]))
    }

    init(json: JSON, what: String) throws(StoreError) {
        guard let o = json.object, let c = o["containerID"]?.int64, let h = o["hostID"]?.int64, let s = o["size"]?.int64,
              let c32 = UInt32(exactly: c), let h32 = UInt32(exactly: h), let s32 = UInt32(exactly: s) else {
            throw StoreError(.corrupt, "\(what) is not an id mapping {\"containerID\", \"hostID\", \"size\"}: \(json.text)")
        }
        self.init(containerID: c32, hostID: h32, size: s32)
    }
}

/// umoci's `MapOptions`: the uid/gid mappings of an unpack (kept in `umoci.json`'s
/// `map_options`, used again by repack) and whether it was rootless.
public struct MapOptions: Sendable, Equatable {
    public var uidMappings: [IdMapping]
    public var gidMappings: [IdMapping]
    public var rootless: Bool

    public init(uidMappings: [IdMapping] = [], gidMappings: [IdMapping] = [], rootless: Bool = false) {
        self.uidMappings = uidMappings
        self.gidMappings = gidMappings
        self.rootless = rootless
    }

    /// Neither mappings nor rootless: ids are written and read as they are.
    public var isIdentity: Bool { uidMappings.isEmpty && gidMappings.isEmpty && !rootless }

    /// A container id on the host (idtools.ToHost): unchanged without mappings, an error when
    /// no range holds it.
    public static func toHost(_ id: Int64, _ maps: [IdMapping], kind: String) throws(StoreError) -> Int64 {
        guard let host = host(of: id, maps) else {
            throw StoreError(.invalidInput, "map \(kind) to host: container id \(id) cannot be mapped to a host id")
        }
        return host
    }

    /// A host id in the container (idtools.ToContainer).
    public static func toContainer(_ id: Int64, _ maps: [IdMapping], kind: String) throws(StoreError) -> Int64 {
        guard let container = container(of: id, maps) else {
            throw StoreError(.invalidInput, "map \(kind) to container: host id \(id) cannot be mapped to a container id")
        }
        return container
    }

    /// toHost without the error: nil when no range holds the id (for callers, such as the
    /// mount's attribute replies, for which an unmapped id is ordinary and must cost nothing).
    public static func host(of id: Int64, _ maps: [IdMapping]) -> Int64? {
        if maps.isEmpty { return id }
        let v = UInt32(truncatingIfNeeded: id)
        for m in maps where v >= m.containerID && UInt64(v) < UInt64(m.containerID) + UInt64(m.size) {
            return Int64(m.hostID) + Int64(v - m.containerID)
        }
        return nil
    }

    /// toContainer without the error: nil when no range holds the id.
    public static func container(of id: Int64, _ maps: [IdMapping]) -> Int64? {
        if maps.isEmpty { return id }
        let v = UInt32(truncatingIfNeeded: id)
        for m in maps where v >= m.hostID && UInt64(v) < UInt64(m.hostID) + UInt64(m.size) {
            return Int64(m.containerID) + Int64(v - m.hostID)
        }
        return nil
    }

    /// `map_options` as umoci writes it (null mappings when there are none).
    public var json: JSON {
        .object(JSONObject([
            "uid_mappings": uidMappings.isEmpty ? .null : .array(uidMappings.map(\.json)),
            "gid_mappings": gidMappings.isEmpty ? .null : .array(gidMappings.map(\.json)),
            "rootless": .bool(rootless),
        ]))
    }

    public init(json: JSON?, path: String) throws(StoreError) {
        self.init()
        guard let json, !json.isNull else { return }
        guard let o = json.object else { throw StoreError(.corrupt, "\(path): map_options is not an object") }
        for (i, m) in (o["uid_mappings"]?.array ?? []).enumerated() {
            uidMappings.append(try IdMapping(json: m, what: "\(path): map_options.uid_mappings[\(i)]"))
        }
        for (i, m) in (o["gid_mappings"]?.array ?? []).enumerated() {
            gidMappings.append(try IdMapping(json: m, what: "\(path): map_options.gid_mappings[\(i)]"))
        }
        rootless = o["rootless"]?.bool ?? false
    }

    /// Whether this process runs in a user namespace that does not map every id (umoci's
    /// RunningInUserNS): device nodes cannot be made there, and an EPERM on setxattr is expected.
    public static let inUserNamespace: Bool = {
        // A /proc file reports size 0: read until the end.
        let fd = open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        let fields = String(decoding: bytes, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
        if fields.isEmpty { return false }
        return !(fields.count == 3 && fields[0] == "0" && fields[1] == "0" && fields[2] == "4294967295")
    }()

    /// umoci's "partial rootless" tricks (device nodes as empty files, EPERM on setxattr
    /// ignored): rootless, or inside a user namespace.
    public var partialRootless: Bool { rootless || MapOptions.inUserNamespace }
}

/// The `user.rootlesscontainers` xattr (github.com/rootless-containers/proto): the protobuf
/// `Resource { uint32 uid = 1; uint32 gid = 2; }`, where 4294967295 means "no change". A
/// rootless unpack keeps an image owner the user cannot set there; a rootless repack writes
/// it back as the entry's owner and never puts the xattr itself into a layer.
public struct RootlessResource: Sendable, Equatable {
    public static let xattrName = "user.rootlesscontainers"
    public static let noop: UInt32 = 0xFFFF_FFFF

    public var uid: UInt32
    public var gid: UInt32

    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }

    /// What umoci's unmapHeader stores for an image owner: each id that is not 0, the rest
    /// "no change"; nil (no xattr) for root:root.
    public static func forOwner(uid: Int64, gid: Int64) -> RootlessResource? {
        let r = RootlessResource(uid: uid == 0 ? noop : UInt32(truncatingIfNeeded: uid),
                                 gid: gid == 0 ? noop : UInt32(truncatingIfNeeded: gid))
        return r.uid == noop && r.gid == noop ? nil : r
    }

    /// proto3 encoding: fields with value 0 are left out.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        func varint(_ v: UInt32) {
            var v = v
            while v >= 0x80 {
                out.append(UInt8(v & 0x7F) | 0x80)
                v >>= 7
            }
            out.append(UInt8(v))
        }
        if uid != 0 { out.append(0x08); varint(uid) }
        if gid != 0 { out.append(0x10); varint(gid) }
        return out
    }

    /// Decodes a protobuf message (unknown fields skipped, missing ones 0, as Go's proto does).
    public init(decoding bytes: [UInt8], path: String) throws(StoreError) {
        uid = 0
        gid = 0
        var i = 0
        func bad(_ why: String) -> StoreError {
            StoreError(.corrupt, "\(path): invalid \(RootlessResource.xattrName) xattr (\(why)): \(bytes.map { String($0, radix: 16) }.joined(separator: " "))")
        }
        func varint() throws(StoreError) -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard i < bytes.count else { throw bad("truncated varint") }
                let b = bytes[i]
                i += 1
                guard shift < 64 else { throw bad("varint too long") }
                value |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return value }
                shift += 7
            }
        }
        while i < bytes.count {
            let key = try varint()
            let field = key >> 3
            switch key & 7 {
            case 0:
                let v = try varint()
                if field == 1 { uid = UInt32(truncatingIfNeeded: v) }
                if field == 2 { gid = UInt32(truncatingIfNeeded: v) }
            case 1: i += 8
            case 2:
                let n = try varint()
                guard n <= UInt64(bytes.count - i) else { throw bad("truncated field") }
                i += Int(n)
            case 5: i += 4
            default: throw bad("unknown wire type \(key & 7)")
            }
            guard i <= bytes.count else { throw bad("truncated field") }
        }
    }
}
