import Foundation
import Testing

/// The umoci under test: `UMOCI_BIN` when set (a path, or a name looked up on PATH: run the
/// suite against an installed `umoci`), else the one built by this package, beside the test
/// bundle in the build directory.
public let ourUmoci: String = {
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
public let debianUmoci = "/usr/bin/umoci"
public let skopeo = "/usr/bin/skopeo"

/// Runs this package's umoci.
@discardableResult
public func umoci(_ arguments: String..., environment: [String: String] = [:], in directory: String? = nil) throws -> Output {
    try run(ourUmoci, arguments, environment: environment, directory: directory)
}

/// Runs Debian's umoci.
@discardableResult
public func reference(_ arguments: String..., in directory: String? = nil) throws -> Output {
    try run(debianUmoci, arguments, directory: directory)
}

/// Expects success; returns stdout.
@discardableResult
public func ok(_ output: Output, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    #expect(output.status == 0, "\(output)", sourceLocation: sourceLocation)
    return output.stdout
}

/// Expects the failure of a command: exit 1 and exactly one line on stderr containing `text`
/// (umoci's own message, or the name of the thing that is wrong: a path, a flag, a blob).
public func fails(_ output: Output, containing text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(output.status == 1, "\(output)", sourceLocation: sourceLocation)
    let lines = output.stderr.split(separator: "\n", omittingEmptySubsequences: true)
    #expect(lines.count == 1, "expected one line on stderr: \(output)", sourceLocation: sourceLocation)
    #expect(output.stderr.contains(text), "\(output)", sourceLocation: sourceLocation)
}
