#if canImport(Glibc)
import Glibc
#endif

/// RFC 3339 timestamps as Go's time package formats them with `time.RFC3339Nano`: fractional
/// seconds without trailing zeros, `Z` for UTC, the original offset otherwise.
public enum Timestamp {
    /// Now, or `SOURCE_DATE_EPOCH` when it is set (the reproducible-builds convention).
    public static func now(environment: [String: String]) throws(StoreError) -> String {
        if let seconds = try sourceDateEpoch(environment: environment) {
            return format(seconds: seconds, nanoseconds: 0)
        }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return format(seconds: Int64(ts.tv_sec), nanoseconds: Int(ts.tv_nsec))
    }

    /// `SOURCE_DATE_EPOCH` in seconds, nil when it is unset or empty.
    public static func sourceDateEpoch(environment: [String: String]) throws(StoreError) -> Int64? {
        guard let epoch = environment["SOURCE_DATE_EPOCH"], !epoch.isEmpty else { return nil }
        guard let seconds = Int64(epoch) else {
            throw StoreError(.invalidInput, "invalid SOURCE_DATE_EPOCH \(quoted: epoch): must be an integer number of seconds")
        }
        return seconds
    }

    public static func format(seconds: Int64, nanoseconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        return compose(year: Int(parts.tm_year) + 1900, month: Int(parts.tm_mon) + 1, day: Int(parts.tm_mday),
                       hour: Int(parts.tm_hour), minute: Int(parts.tm_min), second: Int(parts.tm_sec),
                       fraction: nanoseconds == 0 ? "" : pad(nanoseconds, 9), offset: "Z")
    }

    static func pad(_ value: Int, _ width: Int) -> String {
        let s = String(value)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    static func compose(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int,
                        fraction: String, offset: String) -> String {
        var frac = Substring(fraction)
        while frac.last == "0" { frac.removeLast() }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2))"
            + (frac.isEmpty ? "" : "." + frac) + offset
    }

    /// Parses an RFC 3339 timestamp (`2006-01-02T15:04:05.999999999Z07:00`) and returns it as
    /// Go's time.MarshalJSON writes it (RFC3339Nano): trailing zeros of the fraction trimmed,
    /// `Z` for a zero offset, any other offset kept; nil when it is not one.
    public static func normalize(_ text: String) -> String? {
        let b = Array(text.utf8)
        func digits(_ at: Int, _ n: Int) -> Int? {
            guard at + n <= b.count else { return nil }
            var v = 0
            for i in at..<(at + n) {
                guard (0x30...0x39).contains(b[i]) else { return nil }
                v = v * 10 + Int(b[i] - 0x30)
            }
            return v
        }
        func byte(_ at: Int, _ c: Character) -> Bool { at < b.count && b[at] == c.asciiValue! }
        guard let year = digits(0, 4), byte(4, "-"), let month = digits(5, 2), byte(7, "-"),
              let day = digits(8, 2), byte(10, "T"), let hour = digits(11, 2), byte(13, ":"),
              let minute = digits(14, 2), byte(16, ":"), let second = digits(17, 2) else { return nil }
        guard (1...12).contains(month), (1...daysIn(month, year)).contains(day), hour < 24, minute < 60, second < 60 else {
            return nil
        }
        var i = 19
        var fraction = ""
        if byte(i, ".") {
            i += 1
            let start = i
            while i < b.count, (0x30...0x39).contains(b[i]) { i += 1 }
            guard i > start, i - start <= 9 else { return nil }
            fraction = String(decoding: b[start..<i], as: UTF8.self)
        }
        let offset: String
        if byte(i, "Z") {
            offset = "Z"
            i += 1
        } else if byte(i, "+") || byte(i, "-"), let oh = digits(i + 1, 2), byte(i + 3, ":"), let om = digits(i + 4, 2),
                  oh < 24, om < 60 {
            // Go's time.Format writes "Z" for any zero offset.
            offset = oh == 0 && om == 0 ? "Z" : String(decoding: b[i..<(i + 6)], as: UTF8.self)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        return compose(year: year, month: month, day: day, hour: hour, minute: minute, second: second,
                       fraction: fraction, offset: offset)
    }

    static func daysIn(_ month: Int, _ year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}
