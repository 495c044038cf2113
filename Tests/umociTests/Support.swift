import Foundation
import LayerStore
import Testing

/// What a command printed and how it exited.
struct Output: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    /// stdout as it was written, for output that need not be UTF-8.
    var stdoutBytes: [UInt8] = []
    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Runs a program to completion, with extra environment variables.
@discardableResult
func run(_ program: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil) throws -> Output {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: program)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    process.environment = env
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // Read both pipes while the process runs, so a large output cannot block it.
    let group = DispatchGroup()
    nonisolated(unsafe) var errData = Data()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return Output(status: process.terminationStatus,
                  stdout: String(decoding: outData, as: UTF8.self),
                  stderr: String(decoding: errData, as: UTF8.self),
                  stdoutBytes: Array(outData))
}

/// The umoci under test: `UMOCI_BIN` when set (a path, or a name looked up on PATH: run the
/// suite against an installed `umoci`), else the one built by this package, beside the test
/// bundle in the build directory.
let ourUmoci: String = {
    if let bin = ProcessInfo.processInfo.environment["UMOCI_BIN"], !bin.isEmpty {
        if bin.contains("/") { return bin }
        let found = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
            .map { $0 + "/" + bin }.first { FileManager.default.isExecutableFile(atPath: $0) }
        precondition(found != nil, "UMOCI_BIN=\(bin): no such program on PATH")
        return found!
    }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    // The test bundle may be a directory (…/umociPackageTests.xctest) on some platforms.
    while !FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("umoci").path), dir.path != "/" {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("umoci").path
}()

/// Debian's umoci 0.4.7 and skopeo, the independent implementations this tool is checked against.
let debianUmoci = "/usr/bin/umoci"
let skopeo = "/usr/bin/skopeo"

@discardableResult
func umoci(_ arguments: String..., environment: [String: String] = [:], in directory: String? = nil) throws -> Output {
    try run(ourUmoci, arguments, environment: environment, directory: directory)
}

@discardableResult
func reference(_ arguments: String..., in directory: String? = nil) throws -> Output {
    try run(debianUmoci, arguments, directory: directory)
}

/// Runs and expects success, returning stdout.
@discardableResult
func ok(_ output: Output, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    #expect(output.status == 0, "\(output)", sourceLocation: sourceLocation)
    return output.stdout
}

/// Expects the failure of a command: exit 1 and exactly one line on stderr containing `text`.
func fails(_ output: Output, containing text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(output.status == 1, "\(output)", sourceLocation: sourceLocation)
    let lines = output.stderr.split(separator: "\n", omittingEmptySubsequences: true)
    #expect(lines.count == 1, "expected one line on stderr: \(output)", sourceLocation: sourceLocation)
    #expect(output.stderr.contains(text), "\(output)", sourceLocation: sourceLocation)
}

/// A fresh directory, removed when the value goes away.
final class TemporaryDirectory {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "umoci-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func callAsFunction(_ name: String) -> String { path + "/" + name }
}

/// Every file under `root` with its content, for checking that a failed command changed nothing.
func snapshot(_ root: String) -> [String: Data] {
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

func readJSON(_ path: String) throws -> JSONObject {
    try #require(try JSON.parse(Array(FileManager.default.contents(atPath: path) ?? Data())).object)
}

/// The manifest and config of `tag`, read straight from the files.
func loadImage(_ layout: String, _ tag: String) throws -> (manifest: JSONObject, config: JSONObject, configDigest: String) {
    let index = try readJSON(layout + "/index.json")
    let entry = try #require(index["manifests"]?.array?.first { $0.object?["annotations"]?.object?["org.opencontainers.image.ref.name"]?.string == tag }?.object)
    let manifest = try readJSON(blobPath(layout, try #require(entry["digest"]?.string)))
    let configDigest = try #require(manifest["config"]?.object?["digest"]?.string)
    return (manifest, try readJSON(blobPath(layout, configDigest)), configDigest)
}

func blobPath(_ layout: String, _ digest: String) -> String {
    layout + "/blobs/" + digest.replacingOccurrences(of: ":", with: "/")
}

/// Gives a hand-made upper directory the image root's mtime, as the mount server gives a fresh
/// one (OverlayFS.adoptRootMetadata): repack then sees an unchanged root, and writes a "."
/// entry only when the root's own metadata changes (as umoci does).
func adoptImageRootMtime(_ layout: String, _ tag: String, upper: String, cache: String) throws {
    let opened = try ImageLayout(opening: layout)
    let view = try MergedView.open(layout: opened, image: opened.loadImage(tag: tag), cache: IndexCache(directory: cache))
    ok(try run("/usr/bin/touch", ["-h", "-d", "@\(view.inode(of: MergedView.root).mtime)", upper]))
}
