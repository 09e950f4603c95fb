import Foundation

/// HDFS over HTTP (WebHDFS): CREATE and OPEN go to the namenode, which answers 307 with the
/// datanode to talk to; the data goes there (CREATE is sent without data first, as the
/// WebHDFS documentation asks). LISTSTATUS lists a directory, DELETE removes a file. Keys are
/// paths under `root`.
public final class WebHDFSObjectStore: ObjectStore {
    /// e.g. http://namenode:9870
    public let endpoint: String
    /// The directory objects live under, e.g. /strata.
    public let root: String
    /// Sent as `user.name` (simple authentication), when set.
    public let user: String?
    private let transfer: CurlTransfer

    public init(endpoint: String, root: String, user: String? = nil, transfer: CurlTransfer) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.root = root.hasSuffix("/") ? String(root.dropLast()) : root
        self.user = user
        self.transfer = transfer
    }

    private func url(_ path: String, _ op: String, _ parameters: [(String, String)] = []) -> String {
        var query = [("op", op)] + parameters
        if let user { query.append(("user.name", user)) }
        let encodedPath = path.split(separator: "/", omittingEmptySubsequences: false).map { SigV4.encode(String($0)) }
            .joined(separator: "/")
        return endpoint + "/webhdfs/v1" + encodedPath + "?"
            + query.map { "\(SigV4.encode($0.0))=\(SigV4.encode($0.1))" }.joined(separator: "&")
    }

    private func path(_ key: String) -> String { root + "/" + key }

    public func put(_ key: String, _ bytes: [UInt8]) async throws {
        try await create(key, bytes, overwrite: true)
    }

    /// CREATE with `overwrite=false`: HDFS refuses an existing file (FileAlreadyExistsException).
    public func putIfAbsent(_ key: String, _ bytes: [UInt8]) async throws -> Bool {
        do {
            try await create(key, bytes, overwrite: false)
            return true
        } catch ObjectStoreError.service(_, let code, _) where code == "FileAlreadyExistsException" {
            return false
        }
    }

    private func create(_ key: String, _ bytes: [UInt8], overwrite: Bool) async throws {
        let location = try await redirect(
            HTTPRequest(method: "PUT", url: url(path(key), "CREATE", [("overwrite", "\(overwrite)")])), key: key)
        let response = try await transfer.perform(
            HTTPRequest(
                method: "PUT", url: location, headers: [("Content-Type", "application/octet-stream")], body: bytes))
        try check(response, key: key, expecting: 201)
    }

    public func get(_ key: String, range: Range<Int>?) async throws -> [UInt8] {
        var parameters: [(String, String)] = []
        if let range {
            guard !range.isEmpty else { return [] }
            parameters = [("offset", "\(range.lowerBound)"), ("length", "\(range.count)")]
        }
        let location = try await redirect(HTTPRequest(method: "GET", url: url(path(key), "OPEN", parameters)), key: key)
        let response = try await transfer.perform(HTTPRequest(method: "GET", url: location))
        try check(response, key: key, expecting: 200)
        return response.body
    }

    /// Files under `prefix` (a key prefix ending at a directory boundary, or a file name
    /// prefix within one directory), recursively, in key order.
    public func list(prefix: String) async throws -> [(key: String, size: Int)] {
        let directory = prefix.contains("/") ? String(prefix[..<prefix.lastIndex(of: "/")!]) : ""
        var found: [(key: String, size: Int)] = []
        try await walk(directory, into: &found)
        return found.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }
    }

    private func walk(_ directory: String, into found: inout [(key: String, size: Int)]) async throws {
        let response = try await transfer.perform(
            HTTPRequest(method: "GET", url: url(directory.isEmpty ? root : path(directory), "LISTSTATUS")))
        if response.status == 404 { return }
        try check(response, key: directory, expecting: 200)
        guard let document = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
            let statuses = (document["FileStatuses"] as? [String: Any])?["FileStatus"] as? [[String: Any]]
        else {
            throw ObjectStoreError.service(status: response.status, code: "MalformedResponse", message: "LISTSTATUS")
        }
        for status in statuses {
            guard let name = status["pathSuffix"] as? String, let type = status["type"] as? String else { continue }
            let key = directory.isEmpty ? name : directory + "/" + name
            if type == "DIRECTORY" {
                try await walk(key, into: &found)
            } else {
                found.append((key, (status["length"] as? Int) ?? 0))
            }
        }
    }

    public func delete(_ key: String) async throws {
        let response = try await transfer.perform(HTTPRequest(method: "DELETE", url: url(path(key), "DELETE")))
        try check(response, key: key, expecting: 200)
    }

    /// The namenode's answer to a CREATE or OPEN: the datanode's Location.
    private func redirect(_ request: HTTPRequest, key: String) async throws -> String {
        let response = try await transfer.perform(request)
        guard response.status == 307, let location = response.headers["location"] else {
            try check(response, key: key, expecting: 307)
            throw ObjectStoreError.service(status: response.status, code: "NoRedirect", message: "no datanode Location")
        }
        return location
    }

    /// Turns a WebHDFS error (RemoteException JSON) into an `ObjectStoreError`.
    private func check(_ response: HTTPResponse, key: String, expecting status: Int) throws {
        guard response.status != status else { return }
        let exception =
            (try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])?["RemoteException"]
            as? [String: Any]
        let name = exception?["exception"] as? String ?? "HTTP\(response.status)"
        if response.status == 404 || name == "FileNotFoundException" { throw ObjectStoreError.notFound(key) }
        throw ObjectStoreError.service(
            status: response.status, code: name,
            message: exception?["message"] as? String ?? String(decoding: response.body.prefix(200), as: UTF8.self))
    }
}
