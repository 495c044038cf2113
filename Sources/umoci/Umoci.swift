import ArgumentParser
import BundleKit
import Basics
import OCI

#if canImport(Glibc)
import Glibc
#endif

/// The version this tool reports; the umoci it mirrors is 0.4.7 / 0.6.
let umociVersion = "0.1.0"

/// `--version`, in umoci 0.6's shape: this tool's version, then the image-spec and
/// runtime-spec versions it implements, then the toolchain it was built with (umoci names Go's;
/// this is the Swift compiler's).
let versionText: String = {
    #if compiler(>=7.0)
    let swift = "7.0 or later"
    #elseif compiler(>=6.4)
    let swift = "6.4"
    #elseif compiler(>=6.3)
    let swift = "6.3"
    #elseif compiler(>=6.2)
    let swift = "6.2"
    #elseif compiler(>=6.1)
    let swift = "6.1"
    #else
    let swift = "6.0"
    #endif
    return """
        umoci version \(umociVersion)
        image-spec: \(MediaType.imageSpecVersion)
        runtime-spec: \(RuntimeSpec.version)
        swift: \(swift)
        """
}()

@main
struct Umoci: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "umoci",
        abstract: "umoci modifies Open Container images",
        discussion: """
            A reimplementation of umoci whose unpack mounts the image copy-on-write instead of \
            extracting it. Commands keep umoci's flags and behaviour.
            """,
        version: versionText,
        subcommands: [
            Config.self, New.self, Tag.self, Remove.self, Stat.self,
            GC.self, Init.self, List.self, Raw.self, Repack.self, Insert.self, Unpack.self, Mount.self, Umount.self, Serve.self,
        ]
    )

    /// Parses and runs a command; every failure is one line on stderr and exit status 1.
    static func main() {
        var arguments = hoistGlobalFlags(Array(CommandLine.arguments.dropFirst()))
        // umoci's global flags include -v for --version (urfave/cli's default).
        if arguments.first == "-v" { arguments[0] = "--version" }
        do {
            var command = try parseAsRoot(arguments)
            try (command as? any LoggingCommand)?.global.apply()
            try command.run()
        } catch let error as StoreError {
            fail(error.message)
        } catch let error as UsageError {
            fail(error.message)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                // --help, --version, or no command: print what ArgumentParser prepared.
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            fail(message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message)
        }
    }

    /// umoci takes `--log` and `--verbose` before the command name (`umoci --log=info config
    /// ...`); ArgumentParser reads options of the command itself, so they are moved to just
    /// after the command path.
    static func hoistGlobalFlags(_ args: [String]) -> [String] {
        var globals: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--verbose" || a.hasPrefix("--log=") {
                globals.append(a)
                i += 1
            } else if a == "--log", i + 1 < args.count {
                globals += [a, args[i + 1]]
                i += 2
            } else {
                break
            }
        }
        var rest = Array(args[i...])
        var command: any ParsableCommand.Type = Umoci.self
        var j = 0
        while j < rest.count, let sub = command.configuration.subcommands.first(where: {
            $0.configuration.commandName == rest[j] || $0.configuration.aliases.contains(rest[j])
        }) {
            command = sub
            j += 1
        }
        rest.insert(contentsOf: globals, at: j)
        return rest
    }

    static func fail(_ message: String) -> Never {
        Log.error(message)
        Glibc.exit(1)
    }
}

/// A wrong flag or argument found by the command itself, reported like any other error.
struct UsageError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// A command that takes the global `--log` and `--verbose` flags.
protocol LoggingCommand: ParsableCommand {
    var global: GlobalOptions { get }
}

struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("log"), help: "set the log level (debug, info, [warn], error, fatal)")
    var log: String?

    @Flag(name: .customLong("verbose"), help: "alias for --log=info")
    var verbose = false

    func apply() throws {
        if verbose && log != nil { throw UsageError("--log=* and --verbose are mutually exclusive") }
        if verbose { Log.level = .info; return }
        guard let log else { return }
        guard let level = Log.Level(rawValue: log) else {
            throw UsageError("parsing log level: invalid level \(quoted: log)")
        }
        Log.level = level
    }
}

/// umoci's log lines on stderr: `   • message` for debug, info and warnings, `   ⨯ message`
/// for errors, which are always printed.
extension Log {
    /// The library's messages (BundleKit) into this log.
    static let bundleLog = RuntimeBundle.Log(info: { Log.info($0) }, warn: { Log.warn($0) }, error: { Log.error($0) })
}

enum Log {
    enum Level: String, Comparable {
        case debug, info, warn, error, fatal
        var rank: Int { [.debug: 0, .info: 1, .warn: 2, .error: 3, .fatal: 4][self]! }
        static func < (a: Level, b: Level) -> Bool { a.rank < b.rank }
    }

    /// Set once by `GlobalOptions.apply()` before the command runs, read only after; the
    /// command line is single-threaded.
    nonisolated(unsafe) static var level: Level = .warn

    /// One line per message: a control character (a newline in a file name, say) is shown
    /// escaped, as Go's %q would.
    static func emit(_ symbol: String, _ message: String) {
        var shown = ""
        for scalar in message.unicodeScalars {
            switch scalar {
            case "\n": shown += "\\n"
            case "\r": shown += "\\r"
            case "\t": shown.unicodeScalars.append(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                shown += "\\x" + (hex.count < 2 ? "0" : "") + hex
            default: shown.unicodeScalars.append(scalar)
            }
        }
        var line = "   \(symbol) \(shown)\n"
        line.withUTF8 { buf in _ = write(2, buf.baseAddress, buf.count) }
    }

    static func debug(_ message: @autoclosure () -> String) { if level <= .debug { emit("•", message()) } }
    static func info(_ message: @autoclosure () -> String) { if level <= .info { emit("•", message()) } }
    static func warn(_ message: @autoclosure () -> String) { if level <= .warn { emit("•", message()) } }
    static func error(_ message: String) { emit("⨯", message) }
}

extension String.StringInterpolation {
    /// A value quoted the way umoci quotes it in messages: 'value'.
    mutating func appendInterpolation(quoted value: String) {
        appendLiteral("'\(value)'")
    }
}
