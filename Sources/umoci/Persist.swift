import ArgumentParser
import BundleKit
import Basics
import OCI
import BundleFormat

#if canImport(Glibc)
import Glibc
#endif

/// `unpack --persist`: a mounted bundle's rootfs is a FUSE mount, gone after a reboot (its
/// upper directory, every change, stays). The unit template installed with the tool,
/// `umoci-mount@.service` (dist/umoci-mount@.service.in), runs `umoci mount` on the bundle at
/// boot; --persist enables its instance for the bundle, named by the bundle's absolute path as
/// `systemd-escape --path` escapes it. Without the flag unpack does what umoci does, nothing
/// more.
struct PersistOption: ParsableArguments {
    @Flag(name: .customLong("persist"), help: "mount the bundle again at every boot (enables umoci-mount@<bundle>.service; needs systemd)")
    var persist = false

    /// `UMOCI_SYSTEMD_ROOT`: enable the unit in that root (`systemctl --root`) instead of the
    /// running system's, for images built offline.
    var offlineRoot: String? { Environment.variables["UMOCI_SYSTEMD_ROOT"].flatMap { $0.isEmpty ? nil : $0 } }

    /// Refuses --persist before anything is made where systemd does not run (sd_booted's test:
    /// /run/systemd/system exists) and no offline root is named.
    func check() throws {
        guard persist, offlineRoot == nil, !Files.isDirectory("/run/systemd/system") else { return }
        throw UsageError("--persist needs systemd running as PID 1 (there is no /run/systemd/system): mount the bundle after a reboot with umoci mount")
    }

    /// Enables the bundle's unit (for the next boot: the bundle is mounted now). An extracted
    /// bundle's rootfs is a plain directory that survives a reboot: nothing to enable.
    func enable(_ paths: BundlePaths, mounted: Bool) throws {
        guard persist else { return }
        guard mounted else {
            Log.info("--persist: the rootfs of an extracted bundle survives a reboot by itself")
            return
        }
        let unit = PersistOption.unitName(bundle: Mounting.canonical(paths.bundle))
        var arguments = ["systemctl"]
        if let offlineRoot { arguments.append("--root=" + offlineRoot) }
        arguments += ["enable", "--quiet", unit]
        let (status, said) = PersistOption.run(arguments)
        guard status == 0 else {
            let why = said.split(separator: "\n").last.map { ": " + ($0.hasSuffix(".") ? $0.dropLast() : $0) } ?? " (exit status \(status))"
            throw StoreError("\(paths.bundle) is unpacked and mounted, but \(arguments.joined(separator: " ")) failed\(why); is umoci-mount@.service installed (scripts/install.sh)?")
        }
        Log.info("enabled \(unit): the bundle is mounted again at boot")
    }

    /// `umoci-mount@<path escaped as systemd-escape --path does>.service`.
    static func unitName(bundle: String) -> String { "umoci-mount@" + escapePath(bundle) + ".service" }

    /// systemd's unit_name_path_escape: the path without duplicate, leading and trailing '/'
    /// ("-" for the root); '/' becomes '-'; a leading '.', '-', '\' and every byte outside
    /// [A-Za-z0-9:_.] become \xNN.
    static func escapePath(_ path: String) -> String {
        let components = path.utf8.split(separator: UInt8(ascii: "/")).filter { !$0.elementsEqual(".".utf8) }
        if components.isEmpty { return "-" }
        var out = ""
        for (i, component) in components.enumerated() {
            if i > 0 { out += "-" }
            for (j, byte) in component.enumerated() {
                let plain = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "_") || (byte == UInt8(ascii: ".") && !(i == 0 && j == 0))
                if plain {
                    out.unicodeScalars.append(Unicode.Scalar(byte))
                } else {
                    let hex = String(byte, radix: 16)
                    out += "\\x" + (hex.count < 2 ? "0" : "") + hex
                }
            }
        }
        return out
    }

    /// Runs a program found on PATH (its output to /dev/null) and returns its exit status and
    /// what it wrote on stderr, for the one-line error.
    static func run(_ arguments: [String]) -> (status: Int32, stderr: String) {
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return (127, "pipe: \(String(cString: strerror(errno)))") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ)
        close(fds[1])
        defer { close(fds[0]) }
        guard rc == 0 else { return (127, "\(arguments[0]): \(String(cString: strerror(rc)))") }
        var said: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Files.retrying { read(fds[0], &chunk, chunk.count) }
            if n <= 0 { break }
            said += chunk[0..<n]
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return (code, String(decoding: said, as: UTF8.self).trimmingCharacters(in: "\n"))
    }
}
