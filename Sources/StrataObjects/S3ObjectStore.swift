import Crypto
import Foundation

/// An object store: whole-object writes, ranged reads, listing and deletion by key.
public protocol ObjectStore: Sendable {
    func put(_ key: String, _ bytes: [UInt8]) async throws
    /// Writes the object only if there is none under `key` (a conditional write); false when one
    /// exists. A store that ignores the condition overwrites (S3-compatible stores without
    /// conditional writes).
    func putIfAbsent(_ key: String, _ bytes: [UInt8]) async throws -> Bool
    /// The object's bytes, or `range` of them (byte offsets, upper bound excluded).
    func get(_ key: String, range: Range<Int>?) async throws -> [UInt8]
    /// Keys under `prefix`, with their sizes, in key order.
    func list(prefix: String) async throws -> [(key: String, size: Int)]
    func delete(_ key: String) async throws
}

/// Where an S3-compatible store is and who we are to it.
public struct S3Configuration: Sendable {
    /// e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:5000
    public var endpoint: String
    public var region: String
    public var bucket: String
    /// Prepended to every key (e.g. "strata/").
    public var prefix: String
    public var accessKey: String
    public var secretKey: String
    public var sessionToken: String?
    /// Path-style (`endpoint/bucket/key`) or virtual-hosted (`bucket.endpoint/key`) addressing.
    public var pathStyle: Bool
    /// Objects larger than this go up in parts of this size (multipart upload).
    public var partSize: Int

    public init(
        endpoint: String, region: String = "us-east-1", bucket: String, prefix: String = "", accessKey: String,
        secretKey: String, sessionToken: String? = nil, pathStyle: Bool = true, partSize: Int = 8 << 20
    ) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.region = region
        self.bucket = bucket
        self.prefix = prefix
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.sessionToken = sessionToken
        self.pathStyle = pathStyle
        self.partSize = max(5 << 20, partSize)
    }

    /// Credentials, region and endpoint from the standard AWS environment variables
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or
    /// AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL) where not given.
    public static func fromEnvironment(
        bucket: String, endpoint: String? = nil, region: String? = nil, prefix: String = "",
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> S3Configuration {
        guard let accessKey = environment["AWS_ACCESS_KEY_ID"], let secretKey = environment["AWS_SECRET_ACCESS_KEY"]
        else {
            throw ObjectStoreError.service(
                status: 0, code: "NoCredentials", message: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set")
        }
        let region = region ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
        let endpoint =
            endpoint ?? environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"]
            ?? "https://s3.\(region).amazonaws.com"
        return S3Configuration(
            endpoint: endpoint, region: region, bucket: bucket, prefix: prefix, accessKey: accessKey,
            secretKey: secretKey,
            sessionToken: environment["AWS_SESSION_TOKEN"], pathStyle: environment["AWS_S3_VIRTUAL_HOSTED"] == nil)
    }
}

/// S3 over libcurl with Signature Version 4: PUT (multipart above `partSize`), ranged GET,
/// ListObjectsV2, DELETE.
public final class S3ObjectStore: ObjectStore {
    public let configuration: S3Configuration
    private let transfer: CurlTransfer

    public init(configuration: S3Configuration, transfer: CurlTransfer) {
        self.configuration = configuration
        self.transfer = transfer
    }

    // MARK: Operations

    /// A single PUT with `If-None-Match: *` (S3 conditional writes): 412, or 409 for a
    /// conditional write racing this one, means the key exists.
    public func putIfAbsent(_ key: String, _ bytes: [UInt8]) async throws -> Bool {
        do {
            _ = try await send("PUT", key: key, body: bytes, headers: [("If-None-Match", "*")])
            return true
        } catch ObjectStoreError.service(let status, _, _) where status == 412 || status == 409 {
            return false
        }
    }

    public func put(_ key: String, _ bytes: [UInt8]) async throws {
        if bytes.count <= configuration.partSize {
            _ = try await send("PUT", key: key, body: bytes)
            return
        }
        // Multipart: create, upload the parts, complete (abort on failure, so no parts linger).
        let created = try await send("POST", key: key, query: [("uploads", "")])
        guard let uploadID = XMLText.first("UploadId", in: created.body) else {
            throw ObjectStoreError.service(status: created.status, code: "MalformedResponse", message: "no UploadId")
        }
        do {
            var etags: [String] = []
            var offset = 0
            var number = 1
            while offset < bytes.count {
                let end = min(bytes.count, offset + configuration.partSize)
                let part = try await send(
                    "PUT", key: key, query: [("partNumber", "\(number)"), ("uploadId", uploadID)],
                    body: Array(bytes[offset..<end]))
                guard let etag = part.headers["etag"] else {
                    throw ObjectStoreError.service(
                        status: part.status, code: "MalformedResponse", message: "part without ETag")
                }
                etags.append(etag)
                offset = end
                number += 1
            }
            var document = "<CompleteMultipartUpload>"
            for (index, etag) in etags.enumerated() {
                document += "<Part><PartNumber>\(index + 1)</PartNumber><ETag>\(etag)</ETag></Part>"
            }
            document += "</CompleteMultipartUpload>"
            let completed = try await send(
                "POST", key: key, query: [("uploadId", uploadID)], body: Array(document.utf8),
                headers: [("Content-Type", "application/xml")])
            // S3 can answer 200 with an error document for CompleteMultipartUpload.
            if let code = XMLText.first("Code", in: completed.body) {
                throw ObjectStoreError.service(
                    status: completed.status, code: code, message: XMLText.first("Message", in: completed.body) ?? "")
            }
        } catch {
            _ = try? await send("DELETE", key: key, query: [("uploadId", uploadID)])
            throw error
        }
    }

    public func get(_ key: String, range: Range<Int>?) async throws -> [UInt8] {
        var headers: [(String, String)] = []
        if let range {
            guard !range.isEmpty else { return [] }
            headers.append(("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
        }
        return try await send("GET", key: key, headers: headers).body
    }

    public func list(prefix: String) async throws -> [(key: String, size: Int)] {
        var found: [(key: String, size: Int)] = []
        var token: String?
        repeat {
            var query = [("list-type", "2"), ("prefix", configuration.prefix + prefix)]
            if let token { query.append(("continuation-token", token)) }
            let page = try await send("GET", key: nil, query: query)
            for contents in XMLText.all("Contents", in: page.body) {
                guard let key = XMLText.first("Key", in: contents),
                    let size = XMLText.first("Size", in: contents).flatMap({ Int($0) })
                else { continue }
                found.append((String(key.dropFirst(configuration.prefix.count)), size))
            }
            token =
                XMLText.first("IsTruncated", in: page.body) == "true"
                ? XMLText.first("NextContinuationToken", in: page.body) : nil
        } while token != nil
        return found
    }

    public func delete(_ key: String) async throws {
        _ = try await send("DELETE", key: key)
    }

    /// Creates the bucket (tests and first-time setup).
    public func createBucket() async throws {
        var body: [UInt8] = []
        if configuration.region != "us-east-1" {
            body = Array(
                "<CreateBucketConfiguration><LocationConstraint>\(configuration.region)</LocationConstraint></CreateBucketConfiguration>"
                    .utf8)
        }
        _ = try await send("PUT", key: nil, body: body)
    }

    // MARK: Requests

    /// Signs and sends one request; a non-2xx answer becomes an `ObjectStoreError`.
    private func send(
        _ method: String, key: String?, query: [(String, String)] = [], body: [UInt8] = [],
        headers: [(String, String)] = []
    ) async throws -> HTTPResponse {
        let request = sign(
            method: method, key: key.map { configuration.prefix + $0 }, query: query, body: body, headers: headers)
        let response = try await transfer.perform(request)
        guard (200..<300).contains(response.status) else {
            let code = XMLText.first("Code", in: response.body)
            if let key, response.status == 404, code == nil || code == "NoSuchKey" {
                throw ObjectStoreError.notFound(key)
            }
            throw ObjectStoreError.service(
                status: response.status, code: code ?? "HTTP\(response.status)",
                message: XMLText.first("Message", in: response.body)
                    ?? String(decoding: response.body.prefix(200), as: UTF8.self))
        }
        return response
    }

    func sign(
        method: String, key: String?, query: [(String, String)], body: [UInt8], headers extra: [(String, String)],
        now: Date = Date()
    ) -> HTTPRequest {
        let (scheme, hostAndBase) = Self.split(configuration.endpoint)
        var host = hostAndBase.split(separator: "/", maxSplits: 1).first.map(String.init) ?? hostAndBase
        let basePath = hostAndBase.dropFirst(host.count)
        var path = String(basePath)
        if configuration.pathStyle {
            path += "/" + configuration.bucket
        } else {
            host = configuration.bucket + "." + host
        }
        if let key { path += "/" + key }
        if path.isEmpty { path = "/" }
        let canonicalPath = path.split(separator: "/", omittingEmptySubsequences: false).map {
            SigV4.encode(String($0))
        }
        .joined(separator: "/")
        let canonicalQuery = query.map { (SigV4.encode($0.0), SigV4.encode($0.1)) }.sorted { $0 < $1 }
            .map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        let payloadHash = SigV4.hex(SHA256.hash(data: body))
        let (amzDate, day) = SigV4.timestamps(now)
        var headers: [(String, String)] = [
            ("host", host), ("x-amz-content-sha256", payloadHash), ("x-amz-date", amzDate),
        ]
        if let token = configuration.sessionToken { headers.append(("x-amz-security-token", token)) }
        for (name, value) in extra { headers.append((name.lowercased(), value)) }
        headers.sort { $0.0 < $1.0 }
        let signedHeaders = headers.map(\.0).joined(separator: ";")
        let canonicalRequest = [
            method, canonicalPath, canonicalQuery,
            headers.map { "\($0.0):\($0.1.trimmingCharacters(in: .whitespaces))\n" }.joined(), signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(configuration.region)/s3/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, SigV4.hex(SHA256.hash(data: Array(canonicalRequest.utf8))),
        ]
        .joined(separator: "\n")
        let signature = SigV4.signature(
            secret: configuration.secretKey, day: day, region: configuration.region, stringToSign: stringToSign)
        var sent = headers.filter { $0.0 != "host" }
        sent.append(
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=\(configuration.accessKey)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
            ))
        let url = "\(scheme)://\(host)\(canonicalPath)" + (canonicalQuery.isEmpty ? "" : "?" + canonicalQuery)
        return HTTPRequest(method: method, url: url, headers: sent, body: body)
    }

    private static func split(_ endpoint: String) -> (scheme: String, rest: String) {
        guard let range = endpoint.range(of: "://") else { return ("https", endpoint) }
        return (String(endpoint[..<range.lowerBound]), String(endpoint[range.upperBound...]))
    }
}

/// AWS Signature Version 4 pieces.
enum SigV4 {
    /// RFC 3986 percent-encoding of everything but the unreserved characters.
    static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E:
                out.unicodeScalars.append(UnicodeScalar(byte))
            default: out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { String(format: "%02x", $0) }.joined()
    }

    /// `x-amz-date` (yyyyMMdd'T'HHmmss'Z') and the scope's day (yyyyMMdd), UTC.
    static func timestamps(_ date: Date) -> (String, String) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        let day = String(format: "%04d%02d%02d", c.year!, c.month!, c.day!)
        return (day + String(format: "T%02d%02d%02dZ", c.hour!, c.minute!, c.second!), day)
    }

    static func signature(secret: String, day: String, region: String, stringToSign: String) -> String {
        func hmac(_ key: [UInt8], _ text: String) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: SymmetricKey(data: key)))
        }
        let key = hmac(hmac(hmac(hmac(Array("AWS4\(secret)".utf8), day), region), "s3"), "aws4_request")
        return hex(hmac(key, stringToSign))
    }
}

/// Just enough XML for S3's answers: the text of elements by name (S3's documents are flat
/// and unambiguous for the elements read here).
enum XMLText {
    static func all(_ name: String, in bytes: [UInt8]) -> [[UInt8]] {
        let text = String(decoding: bytes, as: UTF8.self)
        var found: [[UInt8]] = []
        var rest = text[...]
        while let open = rest.range(of: "<\(name)>"), let close = rest[open.upperBound...].range(of: "</\(name)>") {
            found.append(Array(rest[open.upperBound..<close.lowerBound].utf8))
            rest = rest[close.upperBound...]
        }
        return found
    }

    static func first(_ name: String, in bytes: [UInt8]) -> String? {
        all(name, in: bytes).first.map { unescape(String(decoding: $0, as: UTF8.self)) }
    }

    static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
