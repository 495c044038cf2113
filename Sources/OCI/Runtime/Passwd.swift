#if canImport(Glibc)
import Glibc
#endif
import Basics

/// The user database of a root filesystem (`etc/passwd`, `etc/group`) and the resolution of an
/// image's `User` spec against it, following the rules of Go's `moby/sys/user.GetExecUser`,
/// which umoci uses.
enum Passwd {
    struct User: Equatable {
        var name = "", uid = 0, gid = 0, home = ""
    }

    struct Group: Equatable {
        var name = "", gid = 0, members: [String] = []
    }

    /// What a user spec resolves to: the process's ids and, when a passwd entry matched, its home.
    struct ExecUser: Equatable {
        var uid = 0, gid = 0, additionalGids: [Int] = [], home = ""
    }

    static let idRange = 0...Int(Int32.max)

    // MARK: Parsing

    /// The non-blank lines, trimmed, split on ":". Like Go's bufio.Scanner + bytes.TrimSpace.
    static func records(_ bytes: [UInt8]) -> [[String]] {
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (b >= 0x09 && b <= 0x0D) }
        return bytes.split(separator: 0x0A, omittingEmptySubsequences: true).compactMap { line in
            guard let start = line.firstIndex(where: { !isSpace($0) }),
                  let end = line.lastIndex(where: { !isSpace($0) }) else { return nil }
            return line[start...end].split(separator: 0x3A, omittingEmptySubsequences: false)
                .map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// Go's strconv.Atoi as moby/sys/user uses it: a field that is not a number counts as 0.
    static func number(_ fields: [String], _ i: Int) -> Int { i < fields.count ? Int(fields[i]) ?? 0 : 0 }

    /// passwd(5): name:password:uid:gid:gecos:home:shell.
    static func parseUsers(_ bytes: [UInt8]) -> [User] {
        records(bytes).map { f in
            User(name: f[0], uid: number(f, 2), gid: number(f, 3), home: f.count > 5 ? f[5] : "")
        }
    }

    /// group(5): name:password:gid:member,member.
    static func parseGroups(_ bytes: [UInt8]) -> [Group] {
        records(bytes).map { f in
            let list = f.count > 3 && !f[3].isEmpty ? f[3].split(separator: ",", omittingEmptySubsequences: false).map(String.init) : []
            return Group(name: f[0], gid: number(f, 2), members: list)
        }
    }

    // MARK: Reading from a rootfs

    /// `path` resolved inside `root` the way filepath-securejoin does: every symlink is followed
    /// as if `root` were "/", and ".." never climbs above it, so the result is always under
    /// `root` (as of the check: a concurrent rename could still race it, which is acceptable
    /// for reading the user database). A missing component ends the walk; the rest is appended
    /// as is. Nil after too many symlinks.
    static func resolve(_ path: String, inRoot root: String) -> String? {
        var done: [String] = []
        var pending = path.split(separator: "/").map(String.init).reversed() as [String]
        var links = 0
        func joined(_ parts: [String]) -> String { ([root] + parts).joined(separator: "/") }
        while let part = pending.popLast() {
            if part == "." || part.isEmpty { continue }
            if part == ".." { _ = done.popLast(); continue }
            let candidate = joined(done + [part])
            var st = stat()
            guard lstat(candidate, &st) == 0 else {
                return joined(done + [part] + pending.reversed())
            }
            guard (st.st_mode & S_IFMT) == S_IFLNK else { done.append(part); continue }
            links += 1
            if links > 255 { return nil }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(candidate, &buffer, buffer.count - 1)
            if n < 0 { return nil }
            let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target.hasPrefix("/") { done = [] }
            pending.append(contentsOf: target.split(separator: "/").map(String.init).reversed())
        }
        return joined(done)
    }

    /// A file of the rootfs, or nil when it is missing or unreadable (moby/sys/user then treats
    /// the database as absent: only numeric ids resolve).
    static func read(_ path: String, inRoot root: String) -> [UInt8]? {
        guard let resolved = resolve(path, inRoot: root) else { return nil }
        return try? Files.read(resolved)
    }

    // MARK: Resolution

    /// Resolves `spec` (`user`, `uid`, `user:group`, `uid:gid`, ...; empty = uid 0) against the
    /// given databases (nil = absent). Errors carry moby/sys/user's messages.
    static func execUser(_ spec: String, users: [User]?, groups: [Group]?) throws(StoreError) -> ExecUser {
        var result = ExecUser()
        let parts = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let userArg = parts[0]
        let groupArg = parts.count > 1 ? parts[1] : ""
        let uidArg = Int(userArg), gidArg = Int(groupArg)

        let matched = (users ?? []).first { u in
            if userArg.isEmpty { return u.uid == result.uid }
            if let uidArg { return u.uid == uidArg }
            return u.name == userArg
        }
        if let matched {
            result.uid = matched.uid
            result.gid = matched.gid
            result.home = matched.home
        } else if !userArg.isEmpty {
            guard let uidArg else {
                throw StoreError(.notFound, "unable to find user \(userArg): no matching entries in passwd file")
            }
            guard idRange.contains(uidArg) else { throw StoreError(.invalidInput, "uids and gids must be in range 0-\(Int32.max)") }
            result.uid = uidArg
        }

        let matchedName = matched?.name ?? ""
        guard !groupArg.isEmpty || !matchedName.isEmpty else { return result }
        if groupArg.isEmpty {
            // Implicit group: the passwd gid stays; every group listing the user is supplementary.
            result.additionalGids = (groups ?? []).filter { $0.members.contains(matchedName) }.map(\.gid)
        } else if let group = (groups ?? []).first(where: { g in gidArg.map { g.gid == $0 } ?? (g.name == groupArg) }) {
            result.gid = group.gid
        } else {
            guard let gidArg else {
                throw StoreError(.notFound, "unable to find group \(groupArg): no matching entries in group file")
            }
            guard idRange.contains(gidArg) else { throw StoreError(.invalidInput, "uids and gids must be in range 0-\(Int32.max)") }
            result.gid = gidArg
        }
        return result
    }

    /// Resolves `spec` against ROOTFS/etc/passwd and ROOTFS/etc/group (nil rootfs: numeric
    /// ids only, as umoci does when it opens no file).
    static func execUser(_ spec: String, rootfs: String?) throws(StoreError) -> ExecUser {
        guard let rootfs else { return try execUser(spec, users: nil, groups: nil) }
        let users = read("etc/passwd", inRoot: rootfs).map(parseUsers)
        let groups = read("etc/group", inRoot: rootfs).map(parseGroups)
        return try execUser(spec, users: users, groups: groups)
    }
}
