import Foundation
import Testing

/// What a program printed and how it exited.
public struct Output: CustomStringConvertible, Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    /// stdout as it was written, for output that need not be UTF-8.
    public var stdoutBytes: [UInt8] = []
    public var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Runs a program to completion, with extra environment variables, its stdin /dev/null.
@discardableResult
public func run(_ program: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil) throws -> Output {
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

/// Runs and requires exit status 0.
@discardableResult
public func runOK(_ program: String, _ arguments: [String], environment: [String: String] = [:],
           sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let o = try run(program, arguments, environment: environment)
    try #require(o.status == 0, "\(program) \(arguments.joined(separator: " ")): \(o)", sourceLocation: sourceLocation)
    return o.stdout
}

/// Runs `command` with /bin/sh -c.
@discardableResult
public func shell(_ command: String, environment: [String: String] = [:], directory: String? = nil) throws -> Output {
    try run("/bin/sh", ["-c", command], environment: environment, directory: directory)
}
