// The fake API server's storage, with the semantics an operator relies on: one global
// resourceVersion counter; create/update/delete with optimistic concurrency (409 when the
// body's resourceVersion is stale); generation bumped only on spec changes; the status
// subresource split (main writes keep status, status writes keep everything else);
// finalizers with deletionTimestamp; garbage collection of dependents through ownerReferences;
// an event history that watches replay from a resourceVersion, and 410 Expired once the
// history has been compacted past it. Test hooks inject conflicts and compact the history.
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Platform.Testing.Kubernetes;

internal sealed record StoredEvent(long ResourceVersion, string Type, string TypeKey, string Namespace, JsonObject Object);

internal sealed class WatchSubscription
{
    public required string TypeKey { get; init; }
    public required string? Namespace { get; init; }
    public required Func<JsonObject, bool> Filter { get; init; }
    public Channel<StoredEvent> Channel { get; } = System.Threading.Channels.Channel.CreateUnbounded<StoredEvent>();
    public volatile bool Stalled;

    /// <summary>Set before the channel completes when the connection is to be cut, not ended cleanly.</summary>
    public volatile bool Broken;

    /// <summary>Set (under the store's lock) once the watch is ended: it sends no more bookmarks.</summary>
    public volatile bool Ended;

    public bool Matches(StoredEvent e) => e.TypeKey == TypeKey && (Namespace is null || e.Namespace == Namespace) && Filter(e.Object);
}

internal sealed class ObjectStore
{
    private readonly Lock _lock = new();
    private readonly ResourceTypes _types;
    private readonly TimeProvider _time;
    private readonly Dictionary<(string Type, string Ns, string Name), JsonObject> _objects = [];
    private readonly List<StoredEvent> _history = [];
    private readonly List<WatchSubscription> _watches = [];
    private readonly Dictionary<string, int> _injectedConflicts = [];
    private long _resourceVersion = 100;
    private long _compactedThrough;
    private int _nextIp = 10;

    public ObjectStore(ResourceTypes types, TimeProvider time)
    {
        _types = types;
        _time = time;
    }

    public long CurrentResourceVersion
    {
        get
        {
            lock (_lock)
            {
                return _resourceVersion;
            }
        }
    }

    public int OpenWatches
    {
        get
        {
            lock (_lock)
            {
                return _watches.Count;
            }
        }
    }

    /// <summary>The next <paramref name="count"/> updates of this type answer 409 Conflict.</summary>
    public void InjectConflicts(string typeKey, int count)
    {
        lock (_lock)
        {
            _injectedConflicts[typeKey] = count;
        }
    }

    public int PendingConflicts(string typeKey)
    {
        lock (_lock)
        {
            return _injectedConflicts.GetValueOrDefault(typeKey);
        }
    }

    /// <summary>Forgets all history: a watch from any version a client holds now gets 410. The version
    /// first moves on by one, as writes to kinds nobody watches move etcd's revision in a real cluster;
    /// otherwise a client that bookmarks kept at the newest version would resume without a 410.</summary>
    public void CompactHistory()
    {
        lock (_lock)
        {
            CompactLocked();
        }
    }

    /// <summary>Compacts the history and ends every open watch cleanly, in one step, so no bookmark sent
    /// in between can carry a client past the compaction: every watcher must relist.</summary>
    public void ExpireWatches()
    {
        lock (_lock)
        {
            CompactLocked();
            EndWatches(broken: false);
        }
    }

    private void CompactLocked()
    {
        _compactedThrough = ++_resourceVersion;
        _history.Clear();
    }

    /// <summary>Ends every open watch stream cleanly (as an API server restart or timeout would).</summary>
    public void DropWatches() => EndWatches(broken: false);

    /// <summary>Cuts every open watch connection mid-stream (a reset, as a load balancer or a network
    /// fault would): the client sees a broken response, not a clean end.</summary>
    public void BreakWatches() => EndWatches(broken: true);

    private void EndWatches(bool broken)
    {
        lock (_lock)
        {
            foreach (var w in _watches)
            {
                w.Broken = broken;
                w.Ended = true;
                w.Channel.Writer.TryComplete();
            }

            _watches.Clear();
        }
    }

    /// <summary>Keeps every open watch connected but silent (no events, no bookmarks).</summary>
    public void StallWatches()
    {
        lock (_lock)
        {
            foreach (var w in _watches)
            {
                w.Stalled = true;
            }
        }
    }

    public JsonObject? Get(ResourceType type, string ns, string name)
    {
        lock (_lock)
        {
            return _objects.TryGetValue((type.Key, ns, name), out var obj) ? obj.DeepClone().AsObject() : null;
        }
    }

    public (List<JsonObject> Items, long ResourceVersion) List(ResourceType type, string? ns, Func<JsonObject, bool> filter)
    {
        lock (_lock)
        {
            var items = _objects
                .Where(kv => kv.Key.Type == type.Key && (ns is null || kv.Key.Ns == ns))
                .Select(kv => kv.Value)
                .Where(filter)
                .OrderBy(o => o["metadata"]!["namespace"]?.GetValue<string>(), StringComparer.Ordinal)
                .ThenBy(o => o["metadata"]!["name"]!.GetValue<string>(), StringComparer.Ordinal)
                .Select(o => o.DeepClone().AsObject())
                .ToList();
            return (items, _resourceVersion);
        }
    }

    public JsonObject Create(ResourceType type, string ns, JsonObject body)
    {
        lock (_lock)
        {
            var meta = body["metadata"] as JsonObject ?? new JsonObject();
            body["metadata"] = meta;
            var name = meta["name"]?.GetValue<string>();
            if (string.IsNullOrEmpty(name))
            {
                var prefix = meta["generateName"]?.GetValue<string>() ?? throw new ApiException(422, "Invalid", "metadata.name or metadata.generateName is required");
                name = prefix + Guid.NewGuid().ToString("N")[..5];
            }

            if (type.Namespaced && meta["namespace"]?.GetValue<string>() is { Length: > 0 } bodyNs && bodyNs != ns)
            {
                throw new ApiException(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
            }

            if (_objects.ContainsKey((type.Key, ns, name)))
            {
                throw new ApiException(409, "AlreadyExists", $"{type.Plural}.{type.Group} \"{name}\" already exists");
            }

            meta["name"] = name;
            if (type.Namespaced)
            {
                meta["namespace"] = ns;
            }

            meta["uid"] = Guid.NewGuid().ToString();
            meta["creationTimestamp"] = Timestamp();
            meta["generation"] = 1L;
            meta.Remove("deletionTimestamp");
            meta.Remove("resourceVersion");
            body["apiVersion"] = type.GroupVersion;
            body["kind"] = type.Kind;
            if (type.HasStatus && !ResourceTypes.IsCrd(type))
            {
                body.Remove("status");
            }

            FoldStringData(type, body);
            if (type.Kind == "Service" && JsonTools.Str(body, "spec.clusterIP") is null or "")
            {
                JsonTools.Set(body, "spec.clusterIP", $"10.96.0.{_nextIp++}");
            }

            if (ResourceTypes.IsCrd(type))
            {
                _types.RegisterCrd(body);
                body["status"] = new JsonObject
                {
                    ["conditions"] = new JsonArray(
                        new JsonObject { ["type"] = "NamesAccepted", ["status"] = "True", ["reason"] = "NoConflicts", ["message"] = "no conflicts found", ["lastTransitionTime"] = Timestamp() },
                        new JsonObject { ["type"] = "Established", ["status"] = "True", ["reason"] = "InitialNamesAccepted", ["message"] = "the initial names have been accepted", ["lastTransitionTime"] = Timestamp() }),
                    ["acceptedNames"] = body["spec"]!["names"]!.DeepClone(),
                    ["storedVersions"] = new JsonArray(body["spec"]!["versions"]!.AsArray().Select(v => (JsonNode)v!["name"]!.GetValue<string>()).ToArray()),
                };
            }

            Commit("ADDED", type, ns, name, body);
            return body.DeepClone().AsObject();
        }
    }

    /// <summary>Replaces an object (whole, or its status only). A non-empty body resourceVersion must match.</summary>
    public JsonObject Update(ResourceType type, string ns, string name, JsonObject body, bool statusOnly)
    {
        lock (_lock)
        {
            if (!_objects.TryGetValue((type.Key, ns, name), out var current))
            {
                throw NotFound(type, name);
            }

            if (_injectedConflicts.TryGetValue(type.Key, out var left) && left > 0)
            {
                _injectedConflicts[type.Key] = left - 1;
                throw Conflict(type, name, "injected conflict");
            }

            var wanted = JsonTools.Str(body, "metadata.resourceVersion");
            var have = JsonTools.Str(current, "metadata.resourceVersion");
            if (!string.IsNullOrEmpty(wanted) && wanted != have)
            {
                throw Conflict(type, name, "the object has been modified; please apply your changes to the latest version and try again");
            }

            FoldStringData(type, body);
            JsonObject next;
            if (statusOnly)
            {
                next = current.DeepClone().AsObject();
                next["status"] = body["status"]?.DeepClone();
            }
            else
            {
                next = body.DeepClone().AsObject();
                var meta = next["metadata"] as JsonObject ?? new JsonObject();
                next["metadata"] = meta;
                var oldMeta = current["metadata"]!.AsObject();
                foreach (var keep in new[] { "name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation" })
                {
                    meta[keep] = oldMeta[keep]?.DeepClone();
                }

                if (meta["namespace"] is null)
                {
                    meta.Remove("namespace");
                }

                if (meta["deletionTimestamp"] is null)
                {
                    meta.Remove("deletionTimestamp");
                }

                next["apiVersion"] = type.GroupVersion;
                next["kind"] = type.Kind;
                if (type.HasStatus)
                {
                    next["status"] = current["status"]?.DeepClone();
                }

                if (!JsonNode.DeepEquals(WithoutMetaAndStatus(current), WithoutMetaAndStatus(next)))
                {
                    meta["generation"] = JsonTools.Long(oldMeta["generation"]) + 1;
                }

                if (ResourceTypes.IsCrd(type))
                {
                    _types.RegisterCrd(next);
                }
            }

            if (next["status"] is null)
            {
                next.Remove("status");
            }

            var deleting = JsonTools.Str(next, "metadata.deletionTimestamp") is not null;
            if (deleting && (next["metadata"]!["finalizers"] as JsonArray ?? []).Count == 0)
            {
                Remove(type, ns, name, next);
                return next.DeepClone().AsObject();
            }

            Commit("MODIFIED", type, ns, name, next);
            return next.DeepClone().AsObject();
        }
    }

    /// <summary>Deletes: with finalizers only marks deletionTimestamp; otherwise removes and collects dependents.</summary>
    public JsonObject Delete(ResourceType type, string ns, string name, bool orphan)
    {
        lock (_lock)
        {
            if (!_objects.TryGetValue((type.Key, ns, name), out var current))
            {
                throw NotFound(type, name);
            }

            var finalizers = current["metadata"]!["finalizers"] as JsonArray;
            if (finalizers is { Count: > 0 })
            {
                if (JsonTools.Str(current, "metadata.deletionTimestamp") is null)
                {
                    var next = current.DeepClone().AsObject();
                    next["metadata"]!["deletionTimestamp"] = Timestamp();
                    Commit("MODIFIED", type, ns, name, next);
                    return next.DeepClone().AsObject();
                }

                return current.DeepClone().AsObject();
            }

            Remove(type, ns, name, current, orphan);
            return current.DeepClone().AsObject();
        }
    }

    public WatchSubscription Subscribe(ResourceType type, string? ns, Func<JsonObject, bool> filter, string? resourceVersion)
    {
        lock (_lock)
        {
            var sub = new WatchSubscription { TypeKey = type.Key, Namespace = ns, Filter = filter };
            if (string.IsNullOrEmpty(resourceVersion) || resourceVersion == "0")
            {
                foreach (var obj in _objects.Where(kv => kv.Key.Type == type.Key && (ns is null || kv.Key.Ns == ns)).Select(kv => kv.Value).Where(filter))
                {
                    sub.Channel.Writer.TryWrite(new StoredEvent(long.Parse(JsonTools.Str(obj, "metadata.resourceVersion")!, System.Globalization.CultureInfo.InvariantCulture), "ADDED", type.Key, ns ?? "", obj.DeepClone().AsObject()));
                }
            }
            else
            {
                if (!long.TryParse(resourceVersion, System.Globalization.CultureInfo.InvariantCulture, out var since))
                {
                    throw new ApiException(400, "BadRequest", $"invalid resourceVersion {resourceVersion}");
                }

                if (since < _compactedThrough)
                {
                    throw new ApiException(410, "Expired", $"too old resource version: {since} ({_compactedThrough})");
                }

                foreach (var e in _history.Where(e => e.ResourceVersion > since && sub.Matches(e)))
                {
                    sub.Channel.Writer.TryWrite(e);
                }
            }

            _watches.Add(sub);
            return sub;
        }
    }

    public void Unsubscribe(WatchSubscription sub)
    {
        lock (_lock)
        {
            _watches.Remove(sub);
            sub.Ended = true;
            sub.Channel.Writer.TryComplete();
        }
    }

    /// <summary>The resourceVersion a bookmark may carry: only when nothing is queued for the watch and it
    /// has not been ended (a bookmark after the end could carry its client past a compaction).</summary>
    public long? BookmarkVersion(WatchSubscription sub)
    {
        lock (_lock)
        {
            return !sub.Ended && sub.Channel.Reader.Count == 0 ? _resourceVersion : null;
        }
    }

    private void Remove(ResourceType type, string ns, string name, JsonObject last, bool orphan = false)
    {
        var uid = JsonTools.Str(last, "metadata.uid");
        _objects.Remove((type.Key, ns, name));
        var rv = ++_resourceVersion;
        last["metadata"]!["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Publish(new StoredEvent(rv, "DELETED", type.Key, ns, last.DeepClone().AsObject()));

        if (ResourceTypes.IsCrd(type))
        {
            var served = JsonTools.Str(last, "spec.group") + "/" + JsonTools.Str(last, "spec.names.plural");
            if (_types.FindByKey(served) is { } crType)
            {
                foreach (var key in _objects.Keys.Where(k => k.Type == served).ToList())
                {
                    Remove(crType, key.Ns, key.Name, _objects[key]);
                }

                _types.Unregister(served);
            }
        }

        if (orphan || uid is null)
        {
            return;
        }

        // Background garbage collection: every dependent owned by the removed uid goes too.
        var dependents = _objects
            .Where(kv => (kv.Value["metadata"]!["ownerReferences"] as JsonArray ?? []).Any(o => o?["uid"]?.GetValue<string>() == uid))
            .Select(kv => kv.Key)
            .ToList();
        foreach (var key in dependents)
        {
            if (!_objects.TryGetValue(key, out var dependent) || _types.FindByKey(key.Type) is not { } depType)
            {
                continue;
            }

            if ((dependent["metadata"]!["finalizers"] as JsonArray ?? []).Count > 0)
            {
                if (JsonTools.Str(dependent, "metadata.deletionTimestamp") is null)
                {
                    var marked = dependent.DeepClone().AsObject();
                    marked["metadata"]!["deletionTimestamp"] = Timestamp();
                    Commit("MODIFIED", depType, key.Ns, key.Name, marked);
                }
            }
            else
            {
                Remove(depType, key.Ns, key.Name, dependent);
            }
        }
    }

    private void Commit(string eventType, ResourceType type, string ns, string name, JsonObject obj)
    {
        var rv = ++_resourceVersion;
        obj["metadata"]!["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture);
        _objects[(type.Key, ns, name)] = obj.DeepClone().AsObject();
        Publish(new StoredEvent(rv, eventType, type.Key, ns, obj.DeepClone().AsObject()));

        // The garbage collector also removes a dependent whose owners are all gone, e.g. one a
        // controller created from a stale read just after its owner was deleted.
        var owners = (obj["metadata"]!["ownerReferences"] as JsonArray ?? []).Select(o => o?["uid"]?.GetValue<string>()).ToList();
        if (owners.Count > 0 && !_objects.Values.Any(o => owners.Contains(JsonTools.Str(o, "metadata.uid"))))
        {
            Remove(type, ns, name, _objects[(type.Key, ns, name)].DeepClone().AsObject());
        }
    }

    /// <summary>As the API server does: a Secret's write-only stringData is base64-encoded into data.</summary>
    private static void FoldStringData(ResourceType type, JsonObject body)
    {
        if (type.Kind != "Secret" || body["stringData"] is not JsonObject strings)
        {
            return;
        }

        var data = body["data"] as JsonObject ?? new JsonObject();
        foreach (var (key, value) in strings)
        {
            data[key] = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(value?.GetValue<string>() ?? ""));
        }

        body["data"] = data;
        body.Remove("stringData");
    }

    /// <summary>Raised (under the store's lock: keep handlers short) after every committed change.</summary>
    public event Action? Changed;

    private void Publish(StoredEvent e)
    {
        _history.Add(e);
        Changed?.Invoke();
        foreach (var w in _watches.Where(w => w.Matches(e)))
        {
            w.Channel.Writer.TryWrite(e);
        }
    }

    private static JsonObject WithoutMetaAndStatus(JsonObject obj)
    {
        var copy = obj.DeepClone().AsObject();
        copy.Remove("metadata");
        copy.Remove("status");
        return copy;
    }

    private string Timestamp() => _time.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    private static ApiException NotFound(ResourceType type, string name) =>
        new(404, "NotFound", $"{type.Plural}{(type.Group.Length > 0 ? "." + type.Group : "")} \"{name}\" not found");

    private static ApiException Conflict(ResourceType type, string name, string why) =>
        new(409, "Conflict", $"Operation cannot be fulfilled on {type.Plural}{(type.Group.Length > 0 ? "." + type.Group : "")} \"{name}\": {why}");
}
