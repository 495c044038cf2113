import Testing
@testable import Basics
@testable import OCI

@Suite struct JSONTests {
    @Test func roundTripKeepsOrderNumbersAndUnknownFields() throws {
        let text = #"{"z":1,"a":{"y":[1.50,-2e10,true,null],"x":"s"},"big":18446744073709551615}"#
        let value = try JSON.parse(text)
        #expect(value.text == text)
        #expect(value.object?.keys == ["z", "a", "big"])
    }

    @Test func escapesLikeGo() {
        let s = JSON.string("a<b>&\"\\\n\t\u{01}\u{2028}é")
        #expect(s.text == #""a\u003cb\u003e\u0026\"\\\n\t\u0001\u2028é""#)
    }

    @Test func parsesEscapesAndSurrogates() throws {
        #expect(try JSON.parse(#""\u00e9\ud83d\ude00\/""#) == .string("é😀/"))
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "01", "1.", "\"\u{01}\"", "tru", "{} x", "\"\\x\""])
    func rejectsMalformed(_ text: String) {
        #expect(throws: JSONSyntaxError.self) { try JSON.parse(text) }
    }

    @Test func duplicateKeysLastWins() throws {
        let v = try JSON.parse(#"{"a":1,"b":2,"a":3}"#)
        #expect(v.object?["a"] == .number("3"))
        #expect(v.object?.count == 2)
    }

    @Test func setInsertsInStructOrder() {
        var o = JSONObject()
        o.set("Env", .strings(["A=1"]), order: ImageConfig.runConfigFieldOrder)
        o.set("Unknown", .bool(true), order: ImageConfig.runConfigFieldOrder)
        o.set("User", .string("u"), order: ImageConfig.runConfigFieldOrder)
        o.set("Cmd", .strings(["x"]), order: ImageConfig.runConfigFieldOrder)
        #expect(o.keys == ["User", "Env", "Cmd", "Unknown"])
    }

    @Test func indentedLikeMarshalIndent() {
        let v = JSON.object(JSONObject(["a": .array([.int(1)]), "b": .object(JSONObject()), "c": .array([])]))
        #expect(String(decoding: v.serialized(indent: "\t"), as: UTF8.self) == "{\n\t\"a\": [\n\t\t1\n\t],\n\t\"b\": {},\n\t\"c\": []\n}")
    }
}

@Suite struct DigestTests {
    @Test func sha256OfKnownInput() throws {
        #expect(try DigestHasher.digest(of: Array("abc".utf8)).description
            == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test(arguments: [
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "sha512:" + String(repeating: "ab", count: 64),
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
    ])
    func acceptsValid(_ text: String) throws {
        #expect(try Digest(parsing: text).description == text)
    }

    @Test(arguments: [
        "", "sha256", "sha256:", ":abc", "sha256:../../etc/passwd", "sha256:ABC",
        "sha256:" + String(repeating: "A", count: 64), "sha256:abc", "SHA256:" + String(repeating: "a", count: 64),
        "sha256:" + String(repeating: "a", count: 63) + "/", "a..b:xyz", "x:a/b",
    ])
    func rejectsMalformed(_ text: String) {
        #expect(throws: StoreError.self) { try Digest(parsing: text) }
    }
}

@Suite struct ReferenceTests {
    @Test(arguments: ["a", "a_b", "a.b", "a--b", "a/b", "a:b", "A1", "x.y-z_1", "a@b", "a+b", "0num",
                      String(repeating: "a", count: 130)])
    func validTags(_ tag: String) { #expect(ImageReference.isValidTag(tag)) }

    @Test(arguments: ["", "a.", "a-", "-a", "_a", "a__b", "a___b", "a..b", "a//b", "a b", "a/.b", ".x", "a---b", "é"])
    func invalidTags(_ tag: String) { #expect(!ImageReference.isValidTag(tag)) }

    @Test func parsing() throws {
        #expect(try ImageReference(parsing: "lay") == ImageReference(layout: "lay", tag: "latest"))
        #expect(try ImageReference(parsing: "lay:t1") == ImageReference(layout: "lay", tag: "t1"))
        #expect(try ImageReference(parsing: "lay:a:b") == ImageReference(layout: "lay", tag: "a:b"))
        #expect(throws: StoreError.self) { try ImageReference(parsing: ":t") }
        #expect(throws: StoreError.self) { try ImageReference(parsing: "lay:") }
        #expect(throws: StoreError.self) { try ImageReference(parsing: "lay:Bad Tag!") }
    }
}

@Suite struct TimestampTests {
    @Test func normalizesLikeRFC3339Nano() {
        #expect(Timestamp.normalize("2020-01-02T03:04:05Z") == "2020-01-02T03:04:05Z")
        #expect(Timestamp.normalize("2020-01-02T03:04:05.100Z") == "2020-01-02T03:04:05.1Z")
        #expect(Timestamp.normalize("2020-01-01T00:00:00.000000000+02:00") == "2020-01-01T00:00:00+02:00")
        // Go's time.Format writes any zero offset as Z.
        #expect(Timestamp.normalize("2020-01-01T00:00:00+00:00") == "2020-01-01T00:00:00Z")
        #expect(Timestamp.normalize("2020-01-01T00:00:00.5-00:00") == "2020-01-01T00:00:00.5Z")
        #expect(Timestamp.normalize("2020-02-30T00:00:00Z") == nil)
        #expect(Timestamp.normalize("yesterday") == nil)
        #expect(Timestamp.normalize("2020-01-02 03:04:05Z") == nil)
    }

    @Test func sourceDateEpoch() throws {
        #expect(try Timestamp.now(environment: ["SOURCE_DATE_EPOCH": "1234"]) == "1970-01-01T00:20:34Z")
        #expect(throws: StoreError.self) { try Timestamp.now(environment: ["SOURCE_DATE_EPOCH": "x"]) }
        #expect(try Timestamp.sourceDateEpoch(environment: ["SOURCE_DATE_EPOCH": "1234"]) == 1234)
        #expect(try Timestamp.sourceDateEpoch(environment: ["SOURCE_DATE_EPOCH": ""]) == nil)
        #expect(try Timestamp.sourceDateEpoch(environment: [:]) == nil)
    }
}
