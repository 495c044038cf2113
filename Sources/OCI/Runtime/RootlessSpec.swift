#if canImport(Glibc)
import Glibc
#endif
import Basics

extension RuntimeSpec {
    /// The field order of runtime-spec's `Linux` struct, for keys added to `linux`.
    static let linuxOrder = ["uidMappings", "gidMappings", "sysctl", "resources", "cgroupsPath", "namespaces", "devices",
                             "seccomp", "rootfsPropagation", "maskedPaths", "readonlyPaths", "mountLabel", "intelRdt"]

    /// What umoci's UnpackRuntimeJSON does with the map options: with mappings, a user
    /// namespace (replacing any) and `uidMappings`/`gidMappings`; rootless, then umoci's
    /// ToRootless (see `toRootless`).
    public static func apply(_ options: MapOptions, to spec: inout JSONObject, warn: (String) -> Void) throws(StoreError) {
        var linux = spec[object: "linux"]
        if !options.uidMappings.isEmpty || !options.gidMappings.isEmpty {
            var namespaces = (linux["namespaces"]?.array ?? []).filter { $0.object?["type"]?.string != "user" }
            namespaces.append(.object(JSONObject(["type": .string("user")])))
            linux["namespaces"] = .array(namespaces)
        }
        linux.set("uidMappings", options.uidMappings.isEmpty ? nil : .array(options.uidMappings.map(\.json)), order: linuxOrder)
        linux.set("gidMappings", options.gidMappings.isEmpty ? nil : .array(options.gidMappings.map(\.json)), order: linuxOrder)
        spec["linux"] = .object(linux)
        if options.rootless { try toRootless(&spec, warn: warn) }
    }

    /// umoci's convert.ToRootless: no additional groups; no network namespace and one user
    /// namespace last; no mount under /sys and no uid=/gid= mount options, then /sys bound
    /// read-only from the host and /etc/resolv.conf bound read-only (keeping the flags the
    /// kernel locks for an unprivileged bind mount); no cgroup resources.
    static func toRootless(_ spec: inout JSONObject, warn: (String) -> Void) throws(StoreError) {
        var process = spec[object: "process"]
        var user = process[object: "user"]
        user["additionalGids"] = nil
        process["user"] = .object(user)
        spec["process"] = .object(process)

        var linux = spec[object: "linux"]
        var namespaces = (linux["namespaces"]?.array ?? []).filter {
            let type = $0.object?["type"]?.string
            return type != "network" && type != "user"
        }
        namespaces.append(.object(JSONObject(["type": .string("user")])))
        linux["namespaces"] = .array(namespaces)

        var mounts: [JSON] = []
        for m in spec["mounts"]?.array ?? [] {
            guard var mount = m.object else { continue }
            if mount["destination"]?.string?.hasPrefix("/sys") == true { continue }
            let options = (mount["options"]?.strings ?? []).filter { !$0.hasPrefix("gid=") && !$0.hasPrefix("uid=") }
            mount["options"] = options.isEmpty ? nil : .strings(options)
            mounts.append(.object(mount))
        }
        mounts.append(mount("/sys", "bind", "/sys", ["rbind", "nosuid", "noexec", "nodev", "ro"]))
        let resolvConf = "/etc/resolv.conf"
        if access(resolvConf, F_OK) != 0 {
            warn("rootless configuration: automatic bind-mount for \"\(resolvConf)\" cannot be added as the source doesn't exist")
        } else {
            mounts.append(mount(resolvConf, "bind", resolvConf, try unprivilegedMountFlags(resolvConf) + ["rbind", "ro"]))
        }
        spec["mounts"] = .array(mounts)
        linux["resources"] = nil
        spec["linux"] = .object(linux)
    }

    /// The flags of the mount holding `path` that the kernel locks for a bind mount made in a
    /// user namespace (umoci's getUnprivilegedMountFlags, tested the same way against
    /// the mount flags statvfs reports).
    static func unprivilegedMountFlags(_ path: String) throws(StoreError) -> [String] {
        var st = statvfs()
        try check(statvfs(path, &st), "inspecting mount flags of", path)
        let flags = UInt64(truncatingIfNeeded: st.f_flag)
        let known: [(UInt64, String)] = [(UInt64(MS_RDONLY), "ro"), (UInt64(MS_NODEV), "nodev"), (UInt64(MS_NOEXEC), "noexec"),
                                         (UInt64(MS_NOSUID), "nosuid"), (UInt64(MS_NOATIME), "noatime"),
                                         (UInt64(MS_RELATIME), "relatime"), (UInt64(MS_NODIRATIME), "nodiratime")]
        return known.filter { flags & $0.0 == $0.0 }.map(\.1)
    }
}
