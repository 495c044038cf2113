import CLinux
import Foundation
import Basics
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// Model-based test of the mount: random sequences of file operations are applied to a mounted
/// bundle (`umoci unpack`) and to a plain ext4 directory holding the same tree (Debian's
/// `umoci raw unpack` of the same image), which serves as the model. Every operation's outcome
/// (return value or errno, data read, stat fields) and the state of the paths it touched are
/// compared, and the whole trees every few operations and at the end of a sequence. Then the
/// bundle is repacked and Debian's umoci extracts the new image: that must be the mount's tree.
///
/// A divergence names the seed and the operations up to it; `MODEL_SEEDS=7,12` (and
/// `MODEL_OPS=n`) replays chosen seeds.
///
/// Every call works below a directory descriptor, one O_NOFOLLOW component at a time: the
/// images hold absolute symlinks (`abs-link -> /etc/hostname`) that would resolve on the host.
///
/// Not compared, because they legitimately differ between the two file systems:
/// - st_ino and st_dev values (only which names share an inode is compared),
/// - atime and ctime,
/// - a directory's st_nlink and st_size,
/// - exact mtimes of what the test changed (the two trees are changed a few microseconds
///   apart): an mtime from before the test must be the same on both sides; one set during the
///   test must be so on both sides ("new"),
/// - names starting with `.wh.` are never used: the mount refuses them (EINVAL), a deliberate
///   limit (docs/design.md, "The mount"); device nodes are never opened (the mount is nodev,
///   and in the plain directory they are the host's devices),
/// - after repack, xattrs with empty values (see runSeed).
@Suite(.enabled(if: fuseAvailable, "FUSE is not available here (/dev/fuse)"), .serialized)
struct ModelTests {
    static let images = ["basic", "whiteouts", "names"]

    @Test func randomOperationsMatchAPlainDirectory() throws {
        let env = ProcessInfo.processInfo.environment
        let seeds = env["MODEL_SEEDS"].map { $0.split(separator: ",").compactMap { UInt64($0) } } ?? Array(1...16)
        let count = env["MODEL_OPS"].flatMap { Int($0) } ?? 200
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        var total = 0
        for seed in seeds {
            total += try runSeed(seed, operations: count, layout: L, dir: dir)
        }
        #expect(total >= min(1000, seeds.count * count / 2), "only \(total) operations ran")
    }

    /// One sequence; the number of operations applied.
    func runSeed(_ seed: UInt64, operations: Int, layout L: String, dir: TemporaryDirectory) throws -> Int {
        let image = Self.images[Int(seed % UInt64(Self.images.count))]
        let bundle = MountedBundle(dir("bundle-\(seed)"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":" + image + "-gzip", bundle.paths.bundle))
        let plainRoot = dir("plain-\(seed)")
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":" + image + "-gzip", plainRoot]))
        defer { try? FileManager.default.removeItem(atPath: plainRoot) }

        let mount = try Side(bundle.paths.rootfs), plain = try Side(plainRoot)
        defer { mount.close(); plain.close() }
        // Directories that no tar entry defines get the extraction time from umoci: start
        // both trees with the mount's directory times.
        for (path, st) in mount.walk() where st.st_mode & S_IFMT == S_IFDIR {
            _ = plain.at(path) { fd, name in
                var times = [st.st_atim, st.st_mtim]
                return "\(utimensat(fd, name.c, &times, AT_SYMLINK_NOFOLLOW))"
            }
        }
        // File times come from the kernel's coarse clock, which lags CLOCK_REALTIME by up to a
        // tick: wait a little, so that every time set by an operation is after `start`.
        var start = timespec()
        clock_gettime(CLOCK_REALTIME, &start)
        usleep(50_000)
        let model = Model(seed: seed, image: image, mount: mount, plain: plain, start: start)
        if let difference = model.compareTrees() {
            Issue.record("seed \(seed) (\(image)): the trees differ before any operation:\n\(difference)")
            return 0
        }
        let applied = model.run(operations)
        model.closeHeld()
        if applied < operations { return applied }
        if let difference = model.compareTrees() {
            Issue.record("seed \(seed) (\(image)): after \(applied) operations with the descriptors closed:\n\(difference)\n\(model.log())")
            return applied
        }

        // The changes, repacked, are what Debian's umoci extracts from the new image.
        let tag = "model-\(seed)"
        ok(try umoci("repack", "--image", L + ":" + tag, bundle.paths.bundle))
        let theirs = dir("theirs-\(seed)")
        defer { try? FileManager.default.removeItem(atPath: theirs) }
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":" + tag, theirs]))
        let a = try describeTree(bundle.paths.rootfs), b = try describeTree(theirs)
        var differences: [String] = []
        // The root included: its mode, owner and xattrs travel as a "." entry.
        for path in Set(a.keys).union(b.keys).sorted() {
            guard var x = a[path], var y = b[path] else {
                differences.append("\(show(path)): only in \(a[path] == nil ? "Debian's extraction" : "the mount")")
                continue
            }
            // A layer keeps whole seconds; directories a layer does not define get the time of
            // the extraction.
            x.mtimeNanoseconds = 0
            y.mtimeNanoseconds = 0
            if x.type == "dir" { x.mtime = 0; y.mtime = 0 }
            // An xattr with an empty value cannot travel in a layer: a PAX record with an empty
            // value means "no record" to Go's archive/tar (Debian's umoci) and to this tool's
            // reader, so repack writes it and every reader drops it.
            x.xattrs = x.xattrs.filter { !$0.value.isEmpty }
            if x != y { differences.append("\(show(path)):\n  mount:  \(x)\n  Debian: \(y)") }
        }
        if !differences.isEmpty {
            Issue.record("seed \(seed) (\(image)): Debian's umoci extracts the repacked image differently, \(differences.count) paths:\n\(differences.prefix(10).joined(separator: "\n"))\n\(model.log())")
        }
        return applied
    }
}

// MARK: The two trees

/// A tree the operations are applied to, reached through a directory descriptor.
final class Side {
    let root: String
    let rootFd: Int32

    init(_ root: String) throws {
        self.root = root
        rootFd = try Files.open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
    }

    func close() { Glibc.close(rootFd) }

    /// Runs `body` with the directory holding `path` and the last component ("." for the root),
    /// never following a symlink on the way.
    func at(_ path: [ByteString], _ body: (Int32, ByteString) -> String) -> String {
        if path.isEmpty { return body(rootFd, ".") }
        let fd = Files.openDirectory(beneath: rootFd, Array(path.dropLast()))
        if fd < 0 { return "parent: \(errorName(errno))" }
        defer { Glibc.close(fd) }
        return body(fd, path.last!)
    }

    /// Every path below the root (the root as []), with its lstat, parents before children.
    func walk() -> [([ByteString], stat)] {
        var out: [([ByteString], stat)] = []
        var st = stat()
        fstat(rootFd, &st)
        out.append(([], st))
        func visit(_ fd: Int32, _ prefix: [ByteString]) {
            guard let names = try? Files.names(fd: fd, path: root) else { return }
            for name in names.sorted() {
                var st = stat()
                guard fstatat(fd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                out.append((prefix + [name], st))
                if st.st_mode & S_IFMT == S_IFDIR {
                    let sub = openat(fd, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    if sub >= 0 {
                        visit(sub, prefix + [name])
                        Glibc.close(sub)
                    }
                }
            }
        }
        visit(rootFd, [])
        return out
    }
}

func errorName(_ e: Int32) -> String {
    let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", EBADF: "EBADF", EACCES: "EACCES", EEXIST: "EEXIST",
        EXDEV: "EXDEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", EFBIG: "EFBIG", ENOSPC: "ENOSPC",
        EMLINK: "EMLINK", ENAMETOOLONG: "ENAMETOOLONG", ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP", ENODATA: "ENODATA",
        EOPNOTSUPP: "EOPNOTSUPP", ENXIO: "ENXIO", ERANGE: "ERANGE", ETXTBSY: "ETXTBSY", EBUSY: "EBUSY", E2BIG: "E2BIG",
    ]
    return names[e] ?? "errno \(e)"
}

/// A name or path for messages: printable ASCII as is, other bytes as \xNN, long runs of one
/// byte shortened to `x{255}`.
func show(_ name: ByteString) -> String {
    let bytes = name.bytes
    var out = ""
    var i = 0
    while i < bytes.count {
        var j = i
        while j < bytes.count && bytes[j] == bytes[i] { j += 1 }
        let b = bytes[i]
        let text = b >= 0x20 && b < 0x7F && b != 0x5C ? String(UnicodeScalar(b)) : String(format: "\\x%02x", b)
        if j - i > 8 { out += "\(text){\(j - i)}"; i = j } else { out += text; i += 1 }
    }
    return out
}

func show(_ path: [ByteString]) -> String { path.isEmpty ? "." : path.map { show($0) }.joined(separator: "/") }

func digest(_ bytes: ArraySlice<UInt8>) -> String {
    var h: UInt64 = 0xcbf29ce484222325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
    return "\(bytes.count)b:\(String(h, radix: 16))"
}

/// SplitMix64: the same sequence for a seed on every machine.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E3779B97F4A7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

typealias Renameat2Function = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32

/// renameat2(2), which Glibc's Swift module lacks: looked up by name.
let renameat2Function: Renameat2Function = unsafeBitCast(dlsym(dlopen(nil, RTLD_NOW), "renameat2")!, to: Renameat2Function.self)

// MARK: The model

/// Names the operations use besides those a directory already has: NFC and NFD spellings of
/// one word, bytes that are not UTF-8, names of 252 to 255 bytes (whose `.wh.` whiteout would
/// not fit in a name), control characters.
let namePool: [ByteString] = [
    "a", "b", "new", ".hidden", "hard-a", "caf\u{e9}", "cafe\u{301}",
    ByteString(bytes: Array("caf".utf8) + [0xE9]), ByteString(bytes: [0xFF, 0xFE]),
    ByteString(String(repeating: "x", count: 255)), ByteString(String(repeating: "y", count: 252)),
    ByteString(String(repeating: "z", count: 253)), "new\nline", "cr\r",
]

let symlinkTargets: [ByteString] = [
    "a", "../b", "/etc/hostname", "", ByteString(bytes: Array("/target-".utf8) + [0xFF]),
    ByteString("/" + String(repeating: "t", count: 300)), "cafe\u{301}",
]

final class Model {
    let seed: UInt64
    let image: String
    let sides: [Side]
    let start: timespec
    var rng: SeededRandom
    /// Descriptors open across operations: the mount's and the plain directory's.
    var held: [(fds: [Int32], label: String)] = []
    var done: [String] = []

    init(seed: UInt64, image: String, mount: Side, plain: Side, start: timespec) {
        self.seed = seed
        self.image = image
        sides = [mount, plain]
        self.start = start
        rng = SeededRandom(seed: seed)
    }

    func log() -> String {
        "operations of seed \(seed) (\(image)), replay with MODEL_SEEDS=\(seed) MODEL_OPS=\(done.count):\n" +
            done.enumerated().map { "  \($0.offset + 1). \($0.element)" }.joined(separator: "\n")
    }

    func closeHeld() {
        for h in held { for fd in h.fds { Glibc.close(fd) } }
        held.removeAll()
    }

    // MARK: Observations

    /// mtime as compared: its value if it predates the test, else "new".
    func time(_ t: timespec) -> String {
        (t.tv_sec, t.tv_nsec) < (start.tv_sec, start.tv_nsec) ? "mtime=\(t.tv_sec).\(t.tv_nsec)" : "mtime=new"
    }

    func describe(_ st: stat) -> String {
        let fmt = st.st_mode & S_IFMT
        let type = [S_IFDIR: "dir", S_IFREG: "file", S_IFLNK: "symlink", S_IFCHR: "char", S_IFBLK: "block", S_IFIFO: "fifo"][fmt] ?? "other"
        var s = "\(type) \(String(st.st_mode & 0o7777, radix: 8)) \(st.st_uid):\(st.st_gid)"
        // A directory's st_nlink and st_size differ between file systems.
        if fmt != S_IFDIR { s += " size=\(st.st_size) nlink=\(st.st_nlink)" }
        if fmt == S_IFCHR || fmt == S_IFBLK { s += " rdev=\(st.st_rdev)" }
        return s + " " + time(st.st_mtim)
    }

    /// Everything compared about `dirfd`/`name`: stat fields, data, symlink target, xattrs and,
    /// for a directory, its names.
    func fingerprint(_ fd: Int32, _ name: ByteString, listing: Bool = true) -> String {
        var st = stat()
        guard fstatat(fd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return "lstat: \(errorName(errno))" }
        var s = describe(st)
        let fmt = st.st_mode & S_IFMT
        if fmt == S_IFREG {
            let file = openat(fd, name.c, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            if file < 0 { s += " open: \(errorName(errno))" } else {
                var data: [UInt8] = []
                do { try Files.forEachChunk(of: file, path: "") { data += $0 } } catch { s += " read: \(error)" }
                Glibc.close(file)
                s += " data=\(digest(data[...]))"
            }
        }
        if fmt == S_IFLNK {
            var target = [UInt8](repeating: 0, count: 4097)
            let n = readlinkat(fd, name.c, &target, target.count)
            s += n < 0 ? " readlink: \(errorName(errno))" : " -> \(show(ByteString(bytes: target[0..<n])))"
        }
        let path = ByteString("/proc/self/fd/\(fd)/") + name
        var list = [CChar](repeating: 0, count: 65536)
        let n = llistxattr(path.c, &list, list.count)
        if n < 0 { s += " listxattr: \(errorName(errno))" } else if n > 0 {
            var xattrs: [String] = []
            for x in list[0..<n].split(separator: 0).map({ String(cString: Array($0) + [0]) }).sorted() {
                var value = [UInt8](repeating: 0, count: 65536)
                let m = lgetxattr(path.c, x, &value, value.count)
                xattrs.append(m < 0 ? "\(x):\(errorName(errno))" : "\(x)=\(show(ByteString(bytes: value[0..<m])))")
            }
            s += " xattrs{\(xattrs.joined(separator: ","))}"
        }
        if fmt == S_IFDIR && listing {
            let dir = openat(fd, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if dir < 0 { s += " opendir: \(errorName(errno))" } else {
                s += " [" + ((try? Files.names(fd: dir, path: ""))?.sorted().map { show($0) }.joined(separator: ", ") ?? "readdir failed") + "]"
                Glibc.close(dir)
            }
        }
        return s
    }

    /// The whole tree: each path's fingerprint, and the groups of names that share an inode.
    func tree(_ side: Side) -> [String: String] {
        var out: [String: String] = [:]
        var inodes: [UInt64: [String]] = [:]
        for (path, st) in side.walk() {
            out[show(path)] = side.at(path) { fingerprint($0, $1, listing: false) }
            if st.st_mode & S_IFMT != S_IFDIR { inodes[UInt64(st.st_ino), default: []].append(show(path)) }
        }
        out["(hardlink groups)"] = inodes.values.filter { $0.count > 1 }.map { $0.sorted().joined(separator: " = ") }.sorted().joined(separator: "; ")
        return out
    }

    func compareTrees() -> String? {
        let a = tree(sides[0]), b = tree(sides[1])
        var differences: [String] = []
        for key in Set(a.keys).union(b.keys).sorted() where a[key] != b[key] {
            differences.append("\(key):\n  mount: \(a[key] ?? "missing")\n  plain: \(b[key] ?? "missing")")
        }
        return differences.isEmpty ? nil : "\(differences.count) paths differ:\n" + differences.prefix(10).joined(separator: "\n")
    }

    // MARK: Random choices (from the plain directory, the model)

    func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
    func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }
    func number(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(rng.next() % UInt64(range.count)) }
    func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }

    /// A directory, then one of its entries (or the directory itself when it is empty).
    func existing(_ entries: [([ByteString], stat)], where wanted: (stat) -> Bool = { _ in true }) -> [ByteString]? {
        let matching = entries.filter { !$0.0.isEmpty && wanted($0.1) }
        guard !matching.isEmpty else { return nil }
        var dirs: [[ByteString]] = [], seen = Set<[ByteString]>()
        for (path, _) in matching where seen.insert(Array(path.dropLast())).inserted { dirs.append(Array(path.dropLast())) }
        let dir = pick(dirs)
        return pick(matching.filter { Array($0.0.dropLast()) == dir }.map { $0.0 })
    }

    /// A path to create or to replace: a directory and a name, new or already there.
    func target(_ entries: [([ByteString], stat)]) -> [ByteString] {
        let dirs = entries.filter { $0.1.st_mode & S_IFMT == S_IFDIR }.map { $0.0 }
        let dir = pick(dirs)
        let inside = entries.filter { $0.0.count == dir.count + 1 && Array($0.0.dropLast()) == dir }.map { $0.0.last! }
        return dir + [!inside.isEmpty && chance(35) ? pick(inside) : pick(namePool)]
    }

    func isFile(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFREG }
    func isDir(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFDIR }

    // MARK: Running

    /// An operation: what it is, and how it runs on one side (its outcome as text). `touched`
    /// are the paths whose state is compared afterwards (with their parent directories).
    struct Operation {
        var name: String
        var touched: [[ByteString]]
        var apply: (Side, Int) -> String
    }

    /// Applies `count` operations; the number applied before a divergence (count if none).
    func run(_ count: Int) -> Int {
        for i in 0..<count {
            let op = next()
            done.append(op.name)
            let outcomes = [op.apply(sides[0], 0), op.apply(sides[1], 1)]
            if outcomes[0] != outcomes[1] {
                Issue.record("seed \(seed) (\(image)): operation \(i + 1) (\(op.name)) differs:\n  mount: \(outcomes[0])\n  plain: \(outcomes[1])\n\(log())")
                return i
            }
            var paths: [[ByteString]] = []
            for p in op.touched {
                paths.append(p)
                if !p.isEmpty { paths.append(Array(p.dropLast())) }
            }
            for p in paths {
                let states = sides.map { side in side.at(p) { fingerprint($0, $1) } }
                if states[0] != states[1] {
                    Issue.record("seed \(seed) (\(image)): after operation \(i + 1) (\(op.name)), \(show(p)) differs:\n  mount: \(states[0])\n  plain: \(states[1])\n\(log())")
                    return i
                }
            }
            if (i + 1) % 30 == 0, let difference = compareTrees() {
                Issue.record("seed \(seed) (\(image)): after operation \(i + 1) (\(op.name)):\n\(difference)\n\(log())")
                return i
            }
        }
        return count
    }

    func result(_ r: Int32) -> String { r == 0 ? "ok" : errorName(errno) }

    func writeAll(_ fd: Int32, _ data: [UInt8], at offset: Int?) -> String {
        let n = data.withUnsafeBytes { b in offset.map { pwrite(fd, b.baseAddress, b.count, off_t($0)) } ?? write(fd, b.baseAddress, b.count) }
        return n < 0 ? "write: \(errorName(errno))" : "wrote \(n)"
    }

    func openFile(_ fd: Int32, _ name: ByteString, _ flags: Int32, _ mode: mode_t = 0o644) -> Int32 {
        openat(fd, name.c, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode)
    }

    /// The next random operation.
    func next() -> Operation {
        let entries = sides[1].walk()
        while true {
            switch number(0...25) {
            case 0, 1:  // create, maybe with data
                let p = target(entries)
                // Never a device node: the mount refuses to open them (nodev, docs/design.md
                // "The mount"), and in the plain directory they are the host's devices.
                if let st = entries.first(where: { $0.0 == p })?.1, [S_IFCHR, S_IFBLK].contains(st.st_mode & S_IFMT) { continue }
                let exclusive = chance(50)
                let mode = pick([0o644, 0o600, 0o755, 0o4755, 0o2711] as [mode_t])
                let data = chance(70) ? bytes(number(0...3000)) : []
                return Operation(name: "create\(exclusive ? " O_EXCL" : " O_TRUNC") \(show(p)) mode \(String(mode, radix: 8)) with \(data.count) bytes", touched: [p]) { side, _ in
                    side.at(p) { dir, name in
                        let fd = self.openFile(dir, name, O_WRONLY | O_CREAT | (exclusive ? O_EXCL : O_TRUNC), mode)
                        if fd < 0 { return "open: \(errorName(errno))" }
                        defer { Glibc.close(fd) }
                        return self.writeAll(fd, data, at: nil)
                    }
                }
            case 2, 3:  // write at an offset
                guard let p = existing(entries, where: isFile) else { continue }
                let offset = number(0...5000), data = bytes(number(1...3000))
                return Operation(name: "write \(data.count) bytes at \(offset) to \(show(p))", touched: [p]) { side, _ in
                    side.at(p) { dir, name in
                        let fd = self.openFile(dir, name, O_WRONLY)
                        if fd < 0 { return "open: \(errorName(errno))" }
                        defer { Glibc.close(fd) }
                        return self.writeAll(fd, data, at: offset)
                    }
                }
            case 4:  // append
                guard let p = existing(entries, where: isFile) else { continue }
                let data = bytes(number(1...2000))
                return Operation(name: "append \(data.count) bytes to \(show(p))", touched: [p]) { side, _ in
                    side.at(p) { dir, name in
                        let fd = self.openFile(dir, name, O_WRONLY | O_APPEND)
                        if fd < 0 { return "open: \(errorName(errno))" }
                        defer { Glibc.close(fd) }
                        return self.writeAll(fd, data, at: nil)
                    }
                }
            case 5:  // truncate
                guard let p = existing(entries, where: isFile) else { continue }
                let length = number(0...6000)
                return Operation(name: "truncate \(show(p)) to \(length)", touched: [p]) { side, _ in
                    side.at(p) { dir, name in
                        let fd = self.openFile(dir, name, O_WRONLY)
                        if fd < 0 { return "open: \(errorName(errno))" }
                        defer { Glibc.close(fd) }
                        return self.result(ftruncate(fd, off_t(length)))
                    }
                }
            case 6:  // read a part
                guard let p = existing(entries, where: isFile) else { continue }
                let offset = number(0...4000), length = number(1...5000)
                return Operation(name: "read \(length) bytes at \(offset) of \(show(p))", touched: []) { side, _ in
                    side.at(p) { dir, name in
                        let fd = self.openFile(dir, name, O_RDONLY)
                        if fd < 0 { return "open: \(errorName(errno))" }
                        defer { Glibc.close(fd) }
                        var buffer = [UInt8](repeating: 0, count: length)
                        let n = pread(fd, &buffer, length, off_t(offset))
                        return n < 0 ? "read: \(errorName(errno))" : digest(buffer[0..<n])
                    }
                }
            case 7, 8:  // rename, with or without a flag
                guard let from = existing(entries) else { continue }
                let to = chance(30) ? existing(entries) ?? target(entries) : target(entries)
                let flags: UInt32 = pick([0, 0, 1, 2])
                let flagName = ["", " RENAME_NOREPLACE", " RENAME_EXCHANGE"][Int(flags)]
                return Operation(name: "rename\(flagName) \(show(from)) to \(show(to))", touched: [from, to]) { side, _ in
                    side.at(from) { fromDir, fromName in
                        side.at(to) { toDir, toName in self.result(renameat2Function(fromDir, fromName.c, toDir, toName.c, flags)) }
                    }
                }
            case 9:  // link
                guard let from = existing(entries, where: { !self.isDir($0) || self.chance(10) }) else { continue }
                let to = target(entries)
                return Operation(name: "link \(show(from)) to \(show(to))", touched: [from, to]) { side, _ in
                    side.at(from) { fromDir, fromName in
                        side.at(to) { toDir, toName in self.result(linkat(fromDir, fromName.c, toDir, toName.c, 0)) }
                    }
                }
            case 10:  // unlink
                guard let p = existing(entries, where: { !self.isDir($0) || self.chance(10) }) else { continue }
                return Operation(name: "unlink \(show(p))", touched: [p]) { side, _ in
                    side.at(p) { self.result(unlinkat($0, $1.c, 0)) }
                }
            case 11:  // mkdir
                let p = target(entries)
                let mode = pick([0o755, 0o700, 0o2775, 0o1777] as [mode_t])
                return Operation(name: "mkdir \(show(p)) mode \(String(mode, radix: 8))", touched: [p]) { side, _ in
                    side.at(p) { self.result(mkdirat($0, $1.c, mode)) }
                }
            case 12:  // rmdir
                guard let p = existing(entries, where: isDir) else { continue }
                return Operation(name: "rmdir \(show(p))", touched: [p]) { side, _ in
                    side.at(p) { self.result(unlinkat($0, $1.c, AT_REMOVEDIR)) }
                }
            case 13:  // chmod (not of a symlink: Linux cannot)
                let p = chance(10) ? [] : existing(entries, where: { $0.st_mode & S_IFMT != S_IFLNK }) ?? []
                let mode = pick([0o644, 0o600, 0o755, 0o700, 0o4755, 0o2755, 0o1777, 0o000, 0o640, mode_t(number(0...0o7777))])
                return Operation(name: "chmod \(show(p)) \(String(mode, radix: 8))", touched: [p]) { side, _ in
                    side.at(p) { self.result(Files.chmodNoFollow($0, $1.c, mode)) }
                }
            case 14:  // chown, of the object itself
                let p = chance(10) ? [] : existing(entries) ?? []
                let uid = pick([0, 1000, 1234, 3_000_000, UInt32.max]), gid = pick([0, 6, 1000, 3_000_001, UInt32.max])
                return Operation(name: "lchown \(show(p)) \(Int32(bitPattern: uid)):\(Int32(bitPattern: gid))", touched: [p]) { side, _ in
                    side.at(p) { self.result(fchownat($0, $1.c, uid, gid, AT_SYMLINK_NOFOLLOW)) }
                }
            case 15, 16:  // setxattr / removexattr (user.*), of the object itself
                let p = chance(10) ? [] : existing(entries) ?? []
                let key = pick(["user.a", "user.b", "user.comment", "user.dir"])
                let value = bytes(number(0...40))
                let flags = pick([0, 0, 1, 2] as [Int32])  // XATTR_CREATE, XATTR_REPLACE
                let remove = chance(35)
                return Operation(name: remove ? "removexattr \(show(p)) \(key)" : "setxattr \(show(p)) \(key) \(value.count) bytes flags \(flags)", touched: [p]) { side, _ in
                    side.at(p) { dir, name in
                        let path = ByteString("/proc/self/fd/\(dir)/") + name
                        return self.result(remove ? lremovexattr(path.c, key) : lsetxattr(path.c, key, value, value.count, flags))
                    }
                }
            case 17:  // symlink
                let p = target(entries)
                let link = pick(symlinkTargets)
                return Operation(name: "symlink \(show(p)) -> \(show(link))", touched: [p]) { side, _ in
                    side.at(p) { self.result(symlinkat(link.c, $0, $1.c)) }
                }
            case 18:  // list a directory, stat an entry
                guard let p = existing(entries) else { continue }
                return Operation(name: "stat \(show(p))", touched: []) { side, _ in
                    side.at(p) { self.fingerprint($0, $1) }
                }
            case 19, 20:  // open a file and keep it open
                guard held.count < 6, let p = existing(entries, where: isFile) else { continue }
                let flags = pick([O_RDONLY, O_RDWR, O_WRONLY])
                let label = "\(show(p)) (open \(["O_RDONLY", "O_WRONLY", "O_RDWR"][Int(flags)]) as #\(done.count + 1))"
                var fds: [Int32] = [-1, -1]
                held.append((fds: [], label: label))
                let slot = held.count - 1
                return Operation(name: "hold \(label)", touched: []) { side, index in
                    side.at(p) { dir, name in
                        fds[index] = self.openFile(dir, name, flags)
                        if index == 1 {
                            if fds.contains(-1) {
                                for fd in fds where fd >= 0 { Glibc.close(fd) }
                                self.held.remove(at: slot)
                            } else {
                                self.held[slot].fds = fds
                            }
                        }
                        return fds[index] < 0 ? "open: \(errorName(errno))" : "ok"
                    }
                }
            default:  // through a descriptor held open
                guard !held.isEmpty else { continue }
                let slot = number(0...(held.count - 1))
                let h = held[slot]
                switch number(0...8) {
                case 0:
                    let offset = number(0...4000), length = number(1...5000)
                    return Operation(name: "pread \(length) at \(offset) from \(h.label)", touched: []) { _, index in
                        var buffer = [UInt8](repeating: 0, count: length)
                        let n = pread(h.fds[index], &buffer, length, off_t(offset))
                        return n < 0 ? "read: \(errorName(errno))" : digest(buffer[0..<n])
                    }
                case 1:
                    let offset = number(0...5000), data = bytes(number(1...3000))
                    return Operation(name: "pwrite \(data.count) at \(offset) to \(h.label)", touched: []) { _, index in
                        self.writeAll(h.fds[index], data, at: offset)
                    }
                case 2:
                    return Operation(name: "fstat \(h.label)", touched: []) { _, index in
                        var st = stat()
                        return fstat(h.fds[index], &st) == 0 ? self.describe(st) : errorName(errno)
                    }
                case 3:
                    let length = number(0...6000)
                    return Operation(name: "ftruncate \(h.label) to \(length)", touched: []) { _, index in
                        self.result(ftruncate(h.fds[index], off_t(length)))
                    }
                case 4:
                    let mode = pick([0o644, 0o600, 0o4755, 0o400] as [mode_t])
                    return Operation(name: "fchmod \(h.label) \(String(mode, radix: 8))", touched: []) { _, index in
                        self.result(fchmod(h.fds[index], mode))
                    }
                case 5:
                    let uid = pick([0, 1000, UInt32.max]), gid = pick([0, 1000, 3_000_001, UInt32.max])
                    return Operation(name: "fchown \(h.label) \(Int32(bitPattern: uid)):\(Int32(bitPattern: gid))", touched: []) { _, index in
                        self.result(fchown(h.fds[index], uid, gid))
                    }
                case 6:
                    let key = pick(["user.a", "user.comment"]), value = bytes(number(1...20))
                    let remove = chance(30)
                    return Operation(name: remove ? "fremovexattr \(h.label) \(key)" : "fsetxattr \(h.label) \(key) \(value.count) bytes", touched: []) { _, index in
                        self.result(remove ? fremovexattr(h.fds[index], key) : fsetxattr(h.fds[index], key, value, value.count, 0))
                    }
                case 7:
                    return Operation(name: "flistxattr, fgetxattr \(h.label)", touched: []) { _, index in
                        var list = [CChar](repeating: 0, count: 4096)
                        let n = flistxattr(h.fds[index], &list, list.count)
                        if n < 0 { return "flistxattr: \(errorName(errno))" }
                        return list[0..<n].split(separator: 0).map { String(cString: Array($0) + [0]) }.sorted().map { key in
                            var value = [UInt8](repeating: 0, count: 4096)
                            let m = fgetxattr(h.fds[index], key, &value, value.count)
                            return m < 0 ? "\(key):\(errorName(errno))" : "\(key)=\(digest(value[0..<m]))"
                        }.joined(separator: ",")
                    }
                default:
                    return Operation(name: "close \(h.label)", touched: []) { _, index in
                        let r = Glibc.close(h.fds[index])
                        if index == 1 { self.held.remove(at: slot) }
                        return self.result(r)
                    }
                }
            }
        }
    }
}
