import CLinux

#if canImport(Glibc)
import Glibc
#endif
import Basics
import Archive

/// What of an upper directory is already in the bundle's base image, because it was packed
/// into it while the upper directory could not simply be emptied (`repack --refresh-bundle` of
/// a mounted bundle): for each path, its type, inode, size, mtime and ctime. The next repack
/// leaves out what is unchanged, so it holds only newer changes, and a rebase moves it out of
/// the upper directory.
///
/// File format: NUL-terminated records (a path may hold any byte but NUL, newlines too): an
/// optional first record `#started SECONDS.NANOSECONDS`, then one record per path: stamp, a
/// tab, the path's bytes. A file without NULs is the earlier format, one record per line, and
/// is still read.
public struct UpperBaseline: Sendable, Equatable {
    public var stamps: [ByteString: String] = [:]
    /// When the walk that took the stamps started, by the upper directory's file system clock.
    /// A file changed again within the same clock tick after it was stamped keeps its stamp
    /// (times move by ticks), so an entry whose ctime is not before this time never counts as
    /// unchanged ("racily clean", as git calls it).
    public var started: FileTime?

    public struct FileTime: Sendable, Equatable, Comparable {
        public var seconds: Int
        public var nanoseconds: Int
        public init(_ t: timespec) { seconds = t.tv_sec; nanoseconds = t.tv_nsec }
        public static func < (a: FileTime, b: FileTime) -> Bool { (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds) }
    }

    public init() {}

    public static func stamp(_ st: stat) -> String {
        "\(st.st_mode & S_IFMT) \(st.st_ino) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)"
    }

    package static func isDirectoryStamp(_ stamp: String) -> Bool { stamp.hasPrefix("\(S_IFDIR) ") }

    /// Whether `path` is exactly as it was stamped (and was not changed within the tick in
    /// which the stamps were taken).
    public func unchanged(_ path: ByteString, _ st: stat) -> Bool {
        // A `.wh.` file cannot change but by going away: its stamp is its shared inode's
        // (UpperWhiteout), whose ctime every new whiteout moves.
        if let recorded = stamps[path], UpperWhiteout.isWhiteoutFile(path.split().last ?? ByteString()),
           (st.st_mode & S_IFMT) == S_IFREG, recorded.hasPrefix("\(S_IFREG) ") {
            return true
        }
        guard let recorded = stamps[path], recorded == UpperBaseline.stamp(st) else { return false }
        guard let started else { return true }
        return FileTime(st.st_ctim) < started
    }

    /// The current time by the clock of the file system holding `path`: the ctime of a file
    /// created next to it (and removed at once). Falls back to the coarse system clock,
    /// rounded down to the second, where nothing can be created.
    package static func fileSystemNow(besides path: String) -> FileTime {
        let probe = Files.directoryName(path) + "/" + Files.temporaryName(prefix: ".umoci-clock-")
        let fd = Glibc.open(probe, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd >= 0 {
            defer { close(fd); Glibc.unlink(probe) }
            var st = stat()
            if fstat(fd, &st) == 0 { return FileTime(st.st_ctim) }
        }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        return FileTime(timespec(tv_sec: now.tv_sec, tv_nsec: 0))
    }

    public static func read(_ path: String) throws(StoreError) -> UpperBaseline? {
        guard Files.exists(path) else { return nil }
        let bytes = try Files.read(path)
        let separator: UInt8 = bytes.contains(0) ? 0 : 0x0A
        var baseline = UpperBaseline()
        for record in bytes.split(separator: separator) {
            func malformed() -> StoreError { StoreError(.corrupt, "\(path): malformed record \(quoted: ByteString(bytes: record))") }
            if record.starts(with: "#started ".utf8) {
                let parts = record.dropFirst(9).split(separator: UInt8(ascii: "."))
                guard parts.count == 2, let s = Int(String(decoding: parts[0], as: UTF8.self)),
                      let n = Int(String(decoding: parts[1], as: UTF8.self)) else { throw malformed() }
                baseline.started = FileTime(timespec(tv_sec: s, tv_nsec: n))
                continue
            }
            guard let tab = record.firstIndex(of: 0x09) else { throw malformed() }
            baseline.stamps[ByteString(bytes: record[record.index(after: tab)...])] = String(decoding: record[..<tab], as: UTF8.self)
        }
        return baseline
    }

    public func write(_ path: String) throws(StoreError) {
        var out: [UInt8] = []
        if let started { out += Array("#started \(started.seconds).\(started.nanoseconds)".utf8) + [0] }
        for key in stamps.keys.sorted() {
            out += Array(stamps[key]!.utf8)
            out.append(0x09)
            key.withBytes { out.append(contentsOf: $0) }
            out.append(0)
        }
        try Files.writeAtomically(path, out)
    }
}

extension UpperBaseline {
    /// Makes an upper directory describe its changes relative to the new base again, before a
    /// server serves it on that base: what was packed and has been removed since (which the
    /// old base did not have, so no whiteout was needed then) gets its whiteout now, so the
    /// new base's copy stays hidden. The whiteouts are what the next repack writes anyway.
    public func reconcile(upperDirectory upper: String) throws(StoreError) {
        let root = try OwnedDescriptor(opening: upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        try reconcile(upperRoot: root.raw, path: upper)
    }

    /// reconcile, given an fd of the upper directory (`path` names it in errors).
    public func reconcile(upperRoot root: Int32, path upper: String) throws(StoreError) {
        var missing = Set<ByteString>()
        for path in stamps.keys.sorted() {
            var components = cleanComponents(path)
            guard let base = components.popLast(), !Whiteout.isWhiteout(base) else { continue }
            let parentPath = components.joined(separator: "/")
            if missing.contains(parentPath) {
                missing.insert(path)
                continue
            }
            let parent = Files.openDirectory(beneath: root, components)
            guard parent >= 0 else { continue }
            defer { close(parent) }
            var st = stat()
            if fstatat(parent, base.c, &st, AT_SYMLINK_NOFOLLOW) == 0 { continue }
            missing.insert(path)
            try check(UpperWhiteout.make(parent, base, root: root), "create whiteout for", upper + "/" + path.description)
        }
    }
}
