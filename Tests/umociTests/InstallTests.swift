import Foundation
import Basics
import OCI
import BundleFormat
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// scripts/install.sh as a packager and a user run it: into a DESTDIR and into a PREFIX, with
/// the binary under test (UMOCI_INSTALL_BINARY: a release build takes too long for a test).
/// The man pages render without a warning, the completions load in bash, the systemd unit
/// verifies, `unpack --persist` enables it in an offline root, and uninstall removes exactly
/// what install put there.
@Suite struct InstallTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    func install(_ action: String, prefix: String = "/usr/local", destdir: String = "") throws -> Output {
        try run("/usr/bin/env", ["PREFIX=" + prefix, "DESTDIR=" + destdir, "UMOCI_INSTALL_BINARY=" + ourUmoci,
                                 "bash", InstallTests.repository + "/scripts/install.sh", action])
    }

    /// Every path below `root`, relative, sorted.
    func tree(_ root: String) -> [String] {
        (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).sorted()
    }

    /// The page names the binary's commands call for (aliases included).
    static let pages = ["umoci", "umoci-config", "umoci-new", "umoci-tag", "umoci-remove", "umoci-rm", "umoci-stat",
                        "umoci-gc", "umoci-init", "umoci-list", "umoci-ls", "umoci-raw", "umoci-raw-runtime-config",
                        "umoci-raw-config", "umoci-raw-unpack", "umoci-raw-add-layer", "umoci-raw-mtree-validate",
                        "umoci-repack", "umoci-insert", "umoci-unpack", "umoci-mount", "umoci-umount"]

    @Test func installIntoDestdirAndUninstall() throws {
        let dir = TemporaryDirectory()
        let dest = dir("dest")
        try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true)
        ok(try install("install", destdir: dest))
        let p = dest + "/usr/local"
        let files = Set(tree(p))
        var expected: Set<String> = ["bin/umoci", "share/bash-completion/completions/umoci", "share/zsh/site-functions/_umoci",
                                     "share/fish/vendor_completions.d/umoci.fish", "lib/systemd/system/umoci-mount@.service",
                                     "share/umoci/install-manifest"]
        for page in Self.pages { expected.insert("share/man/man1/\(page).1") }
        #expect(expected.isSubset(of: files), "missing: \(expected.subtracting(files).sorted())")
        #expect(ok(try run(p + "/bin/umoci", ["--version"])).hasPrefix("umoci version "))

        // Every page renders without a warning from groff (and mandoc's linter, if installed).
        let man1 = p + "/share/man/man1"
        for page in Self.pages {
            let file = man1 + "/" + page + ".1"
            let groff = try run("/usr/bin/groff", ["-man", "-ww", "-z", file])
            #expect(groff.status == 0 && groff.stderr.isEmpty, "\(page): \(groff)")
            if FileManager.default.isExecutableFile(atPath: "/usr/bin/mandoc") {
                let lint = try run("/usr/bin/mandoc", ["-T", "lint", "-W", "warning", file])
                #expect(lint.status == 0 && lint.stdout.isEmpty && lint.stderr.isEmpty, "\(page): \(lint)")
            }
        }
        // man finds them in the prefix: the unpack page with both modes, the reboot section and
        // every flag of the command; an alias opens its page.
        let unpack = try run("/usr/bin/man", ["-M", p + "/share/man", "umoci-unpack"], environment: ["MANWIDTH": "200", "MAN_KEEP_FORMATTING": ""])
        ok(unpack)
        #expect(unpack.stderr.isEmpty, "\(unpack)")
        let shown = unpack.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")  // justified
        for text in ["umoci-unpack - unpacks a reference into an OCI runtime bundle", "Mount (the default)", "Extract (--extract",
                     "REBOOTS", "umoci-mount@.service", "--persist", "--extract", "--rootless", "--uid-map", "--gid-map",
                     "--keep-dirlinks", "--cache-dir", "--image"] {
            #expect(shown.contains(text), "man umoci-unpack lacks \(text)")
        }
        let local = try run("/usr/bin/man", ["-l", man1 + "/umoci-unpack.1"], environment: ["MANWIDTH": "200"])
        #expect(local.status == 0 && local.stdout == unpack.stdout, "\(local)")
        let rm = ok(try run("/usr/bin/man", ["-M", p + "/share/man", "umoci-rm"], environment: ["MANWIDTH": "200"]))
        #expect(rm.contains("umoci-remove - removes a tag from an OCI image"))

        // The bash completion loads and completes commands and flags.
        func complete(_ words: [String]) throws -> [String] {
            let script = """
                source "$0" || exit 3
                COMP_WORDS=("${@}"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
                _umoci umoci "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
                printf '%s\\n' "${COMPREPLY[@]}"
                """
            let out = try run("/bin/bash", ["-c", script, p + "/share/bash-completion/completions/umoci"] + words,
                              environment: ["PATH": p + "/bin:/usr/bin:/bin"])
            ok(out)
            #expect(out.stderr.isEmpty, "\(out)")
            return out.stdout.split(separator: "\n").map(String.init)
        }
        #expect(try complete(["umoci", "unp"]) == ["unpack"])
        #expect(try complete(["umoci", "unpack", "--ex"]) == ["--extract"])
        #expect(try complete(["umoci", "repack", "--refresh"]) == ["--refresh-bundle"])

        // The unit names the installed binary, not the staging directory.
        let unit = try String(contentsOfFile: p + "/lib/systemd/system/umoci-mount@.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/umoci mount %f") && unit.contains("ExecStop=/usr/local/bin/umoci umount %f"))
        #expect(!unit.contains(dest) && !unit.contains("@BINDIR@"))

        // A second install over the first changes nothing that uninstall would miss.
        ok(try install("install", destdir: dest))
        ok(try install("uninstall", destdir: dest))
        #expect(tree(dest) == [], "left after uninstall: \(tree(dest))")
        fails(try install("uninstall", destdir: dest), containing: "nothing installed")
    }

    /// Into a PREFIX that holds other files: they stay; the unit verifies with systemd-analyze
    /// (its ExecStart and its man page exist there).
    @Test func installIntoPrefixVerifyTheUnitAndUninstall() throws {
        let dir = TemporaryDirectory()
        let prefix = dir("prefix")
        try FileManager.default.createDirectory(atPath: prefix + "/share/man/man1", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: prefix + "/share/man/man1/other.1", contents: Data(".TH OTHER 1\n".utf8))
        ok(try install("install", prefix: prefix))
        let unitDir = prefix + "/lib/systemd/system"
        let unit = try String(contentsOfFile: unitDir + "/umoci-mount@.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=\(prefix)/bin/umoci mount %f"))
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") {
            // An instance of the template, named as systemd-escape --path names /srv/my bundle.
            let escaped = ok(try run("/usr/bin/systemd-escape", ["--path", "/srv/my bundle"])).trimmingCharacters(in: .newlines)
            let instance = unitDir + "/umoci-mount@\(escaped).service"
            try FileManager.default.createSymbolicLink(atPath: instance, withDestinationPath: "umoci-mount@.service")
            defer { unlink(instance) }
            let verify = try run("/usr/bin/systemd-analyze", ["verify", instance], environment: ["MANPATH": prefix + "/share/man"])
            #expect(verify.status == 0, "\(verify)")
            #expect(!verify.stdout.contains("umoci-mount") && !verify.stderr.contains("umoci-mount"), "\(verify)")
        }
        ok(try install("uninstall", prefix: prefix))
        #expect(tree(prefix) == ["share", "share/man", "share/man/man1", "share/man/man1/other.1"])
    }

    /// unpack --persist: refused where systemd is not PID 1 (nothing is made); with
    /// UMOCI_SYSTEMD_ROOT, the unit installed there is enabled for the bundle, by the name
    /// systemd-escape gives its path.
    @Test func unpackPersist() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        if !FileManager.default.fileExists(atPath: "/run/systemd/system") {
            fails(try umoci("unpack", "--persist", "--image", L + ":basic", dir("refused")),
                  containing: "--persist needs systemd running as PID 1")
            #expect(!FileManager.default.fileExists(atPath: dir("refused")))
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemctl") else { return }
        let root = dir("root")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        ok(try install("install", destdir: root))
        let bundle = MountedBundle(dir("my bundle-1"))
        ok(try umoci("unpack", "--persist", "--cache-dir", dir("cache"), "--image", L + ":basic", bundle.paths.bundle,
                     environment: ["UMOCI_SYSTEMD_ROOT": root]))
        #expect(FileManager.default.fileExists(atPath: bundle.paths.rootfs + "/etc/hostname"))
        let escaped = ok(try run("/usr/bin/systemd-escape", ["--path", bundle.paths.bundle])).trimmingCharacters(in: .newlines)
        let wants = root + "/etc/systemd/system/multi-user.target.wants"
        let link = try FileManager.default.destinationOfSymbolicLink(atPath: wants + "/umoci-mount@\(escaped).service")
        #expect(link == "/usr/local/lib/systemd/system/umoci-mount@.service")
        // Without the unit installed, the bundle stays unpacked and the error names the step.
        let bare = dir("bare")
        try FileManager.default.createDirectory(atPath: bare, withIntermediateDirectories: true)
        let second = MountedBundle(dir("second"))
        fails(try umoci("unpack", "--persist", "--cache-dir", dir("cache"), "--image", L + ":basic", second.paths.bundle,
                        environment: ["UMOCI_SYSTEMD_ROOT": bare]), containing: "is unpacked and mounted, but systemctl")
        #expect(FileManager.default.fileExists(atPath: second.paths.rootfs + "/etc/hostname"))
        // An extracted bundle needs no unit.
        ok(try umoci("unpack", "--extract", "--persist", "--image", L + ":basic", dir("plain"), environment: ["UMOCI_SYSTEMD_ROOT": bare]))
        #expect(tree(bare) == [])
    }
}
