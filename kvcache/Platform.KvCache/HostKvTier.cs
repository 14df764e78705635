// The host-memory tier: encoded KV blocks in process memory under a byte budget,
// least recently used evicted first. Every block of one engine has the same
// encoded size, so memory is a set of equal slots carved from large slabs (64 MB,
// allocated the first time a slot in them is needed and kept): a put or a hit
// copies bytes and allocates nothing; the LRU is an intrusive list of slot
// indices and the map from hash to slot is sized once for the budget.
// One lock guards everything; it is held for one memcpy of one block (~64 KB on
// the small preset, a few microseconds), by the engine thread (hits) and the
// tier writer (puts).
namespace Platform.KvCache;

/// <summary>Reads an encoded block in place (inside the tier's lock: keep it short, do not keep the span).</summary>
public delegate TResult BlockReader<TState, TResult>(ReadOnlySpan<byte> encoded, TState state);

public sealed class HostKvTier
{
    private const int None = -1;
    private const long SlabBytes = 64L << 20;
    private readonly Lock _lock = new();
    private readonly int _slotBytes;
    private readonly int _slotsPerSlab;
    private readonly byte[]?[] _slabs;
    private readonly ulong[] _hash;
    private readonly ulong[] _parent;
    private readonly bool[] _remote;
    private readonly int[] _prev;
    private readonly int[] _next;
    private readonly Dictionary<ulong, int> _map;
    private int _head = None, _tail = None; // head = least recently used
    private int _nextFresh;
    private readonly Stack<int> _freeSlots;

    public HostKvTier(long budgetBytes, int slotBytes)
    {
        if (slotBytes < 1) throw new ArgumentOutOfRangeException(nameof(slotBytes), slotBytes, "a slot must hold at least one byte");
        long slots = budgetBytes / slotBytes;
        if (slots < 1)
            throw new ArgumentException($"the host KV memory budget of {budgetBytes} bytes is smaller than one block ({slotBytes} bytes); raise --kv-host-memory.");
        if (slots > int.MaxValue / 2) slots = int.MaxValue / 2;
        _slotBytes = slotBytes;
        Capacity = (int)slots;
        BudgetBytes = budgetBytes;
        _slotsPerSlab = (int)Math.Max(1, SlabBytes / slotBytes);
        _slabs = new byte[]?[(Capacity + _slotsPerSlab - 1) / _slotsPerSlab];
        _hash = new ulong[Capacity];
        _parent = new ulong[Capacity];
        _remote = new bool[Capacity];
        _prev = new int[Capacity];
        _next = new int[Capacity];
        _map = new Dictionary<ulong, int>(Capacity);
        _freeSlots = new Stack<int>();
    }

    /// <summary>Blocks the budget holds.</summary>
    public int Capacity { get; }
    public long BudgetBytes { get; }
    public int SlotBytes => _slotBytes;

    public int Count
    {
        get { lock (_lock) return _map.Count; }
    }

    public long UsedBytes => (long)Count * _slotBytes;
    public long Evictions { get; private set; }

    public bool Contains(ulong hash)
    {
        lock (_lock) return _map.ContainsKey(hash);
    }

    /// <summary>
    /// Stores (or refreshes) a block and makes it most recently used. When the tier is full the
    /// least recently used block goes; it is reported so the caller can publish its removal.
    /// </summary>
    /// <returns>True when the block was new to this tier.</returns>
    public bool Put(ulong hash, ulong parent, ReadOnlySpan<byte> encoded, out EvictedBlock evicted)
    {
        if (encoded.Length != _slotBytes) throw new ArgumentException($"this tier stores blocks of {_slotBytes} bytes, got {encoded.Length}", nameof(encoded));
        evicted = default;
        lock (_lock)
        {
            if (_map.TryGetValue(hash, out int existing))
            {
                MoveToTail(existing);
                return false;
            }
            int slot;
            if (_freeSlots.Count > 0) slot = _freeSlots.Pop();
            else if (_nextFresh < Capacity) slot = _nextFresh++;
            else
            {
                slot = _head;
                Unlink(slot);
                _map.Remove(_hash[slot]);
                evicted = new EvictedBlock(true, _hash[slot], _parent[slot], _remote[slot]);
                Evictions++;
            }
            encoded.CopyTo(Slot(slot));
            _hash[slot] = hash;
            _parent[slot] = parent;
            _remote[slot] = false;
            _map[hash] = slot;
            PushTail(slot);
            return true;
        }
    }

    /// <summary>Runs <paramref name="reader"/> over the stored bytes of a block (a hit makes it most recently used).</summary>
    public bool TryRead<TState, TResult>(ulong hash, TState state, BlockReader<TState, TResult> reader, out TResult result)
    {
        ArgumentNullException.ThrowIfNull(reader);
        lock (_lock)
        {
            if (!_map.TryGetValue(hash, out int slot))
            {
                result = default!;
                return false;
            }
            MoveToTail(slot);
            result = reader(Slot(slot), state);
            return true;
        }
    }

    /// <summary>Copies a block's encoded bytes out; false when absent.</summary>
    public bool TryCopy(ulong hash, Span<byte> destination)
    {
        lock (_lock)
        {
            if (!_map.TryGetValue(hash, out int slot)) return false;
            MoveToTail(slot);
            Slot(slot).CopyTo(destination);
            return true;
        }
    }

    /// <summary>Drops a block (e.g. it failed verification).</summary>
    public bool Remove(ulong hash)
    {
        lock (_lock)
        {
            if (!_map.Remove(hash, out int slot)) return false;
            Unlink(slot);
            _freeSlots.Push(slot);
            return true;
        }
    }

    /// <summary>Remembers that the block is also in the remote tier, so the writer does not send it again.</summary>
    public void MarkRemote(ulong hash)
    {
        lock (_lock)
            if (_map.TryGetValue(hash, out int slot)) _remote[slot] = true;
    }

    public bool IsMarkedRemote(ulong hash)
    {
        lock (_lock) return _map.TryGetValue(hash, out int slot) && _remote[slot];
    }

    /// <summary>(hash, parent) of every block held, for a KV event snapshot.</summary>
    public List<(ulong Hash, ulong Parent)> Snapshot()
    {
        lock (_lock)
        {
            var list = new List<(ulong, ulong)>(_map.Count);
            foreach (int slot in _map.Values) list.Add((_hash[slot], _parent[slot]));
            return list;
        }
    }

    private Span<byte> Slot(int slot)
    {
        int slab = slot / _slotsPerSlab;
        var bytes = _slabs[slab];
        if (bytes is null)
        {
            // First use of this slab: allocated once, then reused for the tier's lifetime.
            int slotsHere = Math.Min(_slotsPerSlab, Capacity - slab * _slotsPerSlab);
            bytes = GC.AllocateUninitializedArray<byte>(slotsHere * _slotBytes);
            _slabs[slab] = bytes;
        }
        return bytes.AsSpan((slot % _slotsPerSlab) * _slotBytes, _slotBytes);
    }

    private void PushTail(int slot)
    {
        _prev[slot] = _tail;
        _next[slot] = None;
        if (_tail != None) _next[_tail] = slot; else _head = slot;
        _tail = slot;
    }

    private void Unlink(int slot)
    {
        int p = _prev[slot], n = _next[slot];
        if (p != None) _next[p] = n; else _head = n;
        if (n != None) _prev[n] = p; else _tail = p;
    }

    private void MoveToTail(int slot)
    {
        if (_tail == slot) return;
        Unlink(slot);
        PushTail(slot);
    }
}

/// <summary>A block the host tier dropped to make room (Evicted false: nothing was dropped).</summary>
public readonly record struct EvictedBlock(bool Evicted, ulong Hash, ulong Parent, bool WasInRemote);
