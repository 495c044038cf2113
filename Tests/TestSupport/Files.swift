import CLinux
import Foundation
import Basics
import OCI
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory, removed when the value goes away.
public final class TemporaryDirectory {
    public let path: String
    public init() {
        path = NSTemporaryDirectory() + "umoci-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    public func callAsFunction(_ name: String) -> String { path + "/" + name }
}

/// Writes `text` to `path` (its parent directories made), then sets `mode` if given (else a
/// new file gets the umask's, an existing one keeps its own).
public func write(_ path: String, _ text: String, mode: mode_t? = nil) throws {
    try FileManager.default.createDirectory(atPath: Files.directoryName(path), withIntermediateDirectories: true)
    try text.write(toFile: path, atomically: false, encoding: .utf8)
    if let mode { chmod(path, mode) }
}

/// Makes `path` and its parents, then sets `mode`.
public func makeDirectory(_ path: String, mode: mode_t = 0o755) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    chmod(path, mode)
}

/// The text of a file, nil if it cannot be read.
public func readText(_ path: String) -> String? {
    (try? Files.read(path)).map { String(decoding: $0, as: UTF8.self) }
}

/// The value of extended attribute `name` of `path` itself (not following a symlink), nil if
/// it has none.
public func xattr(_ path: String, _ name: String) -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: 65536)
    let n = lgetxattr(path, name, &buffer, buffer.count)
    return n < 0 ? nil : Array(buffer[0..<n])
}

/// The extended attribute names of `path` itself, as bytes, in the order the kernel lists them.
public func xattrNames(_ path: String) -> [[UInt8]] {
    var names = [CChar](repeating: 0, count: 65536)
    let n = llistxattr(path, &names, names.count)
    guard n > 0 else { return [] }
    return names[0..<n].split(separator: 0).map { $0.map { UInt8(bitPattern: $0) } }
}

/// Every file under `root` with its content, for checking that a failed command changed nothing.
public func snapshot(_ root: String) -> [String: Data] {
    var out: [String: Data] = [:]
    let fm = FileManager.default
    guard let e = fm.enumerator(atPath: root) else { return out }
    while let rel = e.nextObject() as? String {
        var isDir: ObjCBool = false
        _ = fm.fileExists(atPath: root + "/" + rel, isDirectory: &isDir)
        out[rel] = isDir.boolValue ? Data() : fm.contents(atPath: root + "/" + rel)
    }
    return out
}

public func readJSON(_ path: String) throws -> JSONObject {
    try #require(try JSON.parse(Array(FileManager.default.contents(atPath: path) ?? Data())).object)
}
