// One view over a model's weights whether they sit in a single model.safetensors
// or in shards listed by model.safetensors.index.json. Resolves a tensor name to
// its file, and checks that the index and the shards agree.
using System.Text.Json;
using System.Text.Json.Nodes;
using Platform.Core.Memory;

namespace Platform.Core.Safetensors;

public sealed unsafe class ModelWeights : IDisposable
{
    private readonly Dictionary<string, SafetensorsFile> _byTensor = new(StringComparer.Ordinal);
    private readonly List<SafetensorsFile> _files = [];
    private Thread? _populating;
    private volatile bool _stopPopulating;
    private readonly TaskCompletionSource<bool> _populated = new(TaskCreationOptions.RunContinuationsAsynchronously);
    // Page releases asked for while the population runs, done when it ends (ReleasePages); guarded by the list.
    private readonly List<(nint Address, long Bytes)> _deferredReleases = [];
    private bool _populationRunning;

    /// <summary>Completes when a population started by StartPopulating has ended: true when every page was mapped,
    /// false when it was stopped or the kernel cannot (the pages then come at first touch).</summary>
    public Task<bool> Populated => _populated.Task;

    public IReadOnlyCollection<string> TensorNames => _byTensor.Keys;
    public IReadOnlyList<SafetensorsFile> Files => _files;

    public static ModelWeights Open(string modelDirectory)
    {
        var weights = new ModelWeights();
        try
        {
            string single = Path.Combine(modelDirectory, "model.safetensors");
            string index = Path.Combine(modelDirectory, "model.safetensors.index.json");
            if (File.Exists(index)) weights.OpenSharded(modelDirectory, index);
            else if (File.Exists(single)) weights.Add(SafetensorsFile.Open(single));
            else
                throw new ModelLoadException($"{modelDirectory}: no model.safetensors and no model.safetensors.index.json; point --model at a HuggingFace model directory with safetensors weights.");
            return weights;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    private void OpenSharded(string dir, string indexPath)
    {
        JsonObject? map;
        try
        {
            map = (JsonNode.Parse(File.ReadAllText(indexPath)) as JsonObject)?["weight_map"] as JsonObject;
        }
        catch (JsonException e)
        {
            throw new ModelLoadException($"{indexPath} is not valid JSON ({e.Message}).", e);
        }
        if (map is null)
            throw new ModelLoadException($"{indexPath}: missing 'weight_map' object (tensor name -> shard file).");
        var shards = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        foreach (var (tensor, fileNode) in map)
        {
            string? file = fileNode?.GetValue<string>();
            if (string.IsNullOrEmpty(file) || file.Contains('/') || file.Contains('\\'))
                throw new ModelLoadException($"{indexPath}: weight_map['{tensor}'] must name a shard file in the same directory.");
            if (!shards.TryGetValue(file, out var shard))
            {
                shard = SafetensorsFile.Open(Path.Combine(dir, file));
                shards[file] = shard;
                _files.Add(shard);
            }
            if (!shard.Tensors.ContainsKey(tensor))
                throw new ModelLoadException($"{indexPath}: weight_map puts '{tensor}' in {file}, but that shard does not contain it.");
            _byTensor[tensor] = shard;
        }
    }

    /// <summary>
    /// Starts mapping every file's pages into this process on a background thread, in 32 MB steps, so the first
    /// forward pass does not take a page fault per few KB of weights (about 0.24 s for 2.2 GB from the page cache on
    /// the CI VM). Started before libtorch loads, it runs on the other core meanwhile. Release copied ranges through
    /// ReleasePages (which waits for the population's end), or stop it (StopPopulating) before releasing a range
    /// any other way, or it may map that range again.
    /// </summary>
    public void StartPopulating()
    {
        if (_populating is not null) return;
        if (!OperatingSystem.IsLinux())
        {
            _populated.TrySetResult(false);
            return;
        }
        lock (_deferredReleases) _populationRunning = true;
        _populating = new Thread(() =>
        {
            const long Step = 32L << 20;
            bool complete = true;
            foreach (var file in _files)
                for (long at = 0; at < file.Length && complete; at += Step)
                    // Stopped, or a kernel without MADV_POPULATE_READ (before 5.14): the rest comes at first touch.
                    complete = !_stopPopulating && file.PopulatePages(at, Step);
            (nint Address, long Bytes)[] releases;
            lock (_deferredReleases)
            {
                _populationRunning = false;
                releases = [.. _deferredReleases];
                _deferredReleases.Clear();
            }
            foreach (var (address, bytes) in releases) PageAdvice.ReleaseWholePages((void*)address, bytes);
            _populated.TrySetResult(complete);
        })
        { IsBackground = true, Name = "weights-populate" };
        _populating.Start();
    }

    /// <summary>
    /// Drops the whole mapped pages of <paramref name="info"/> from this process's resident set (the page cache keeps
    /// them; a later read maps them again): for a tensor the loader has copied (converted or fused), whose mapped bytes
    /// would otherwise count twice in the RSS. While a population runs the release waits for its end, since the
    /// population could map the range again; the load need not stop it, so the pages the weights read in place still
    /// arrive before the first forward pass (stopping it for a fused q/k/v left that pass ~0.2 s of page faults).
    /// </summary>
    public void ReleasePages(SafetensorsFile file, TensorInfo info)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(info);
        void* address = file.GetPointer(info);
        lock (_deferredReleases)
        {
            if (_populationRunning)
            {
                _deferredReleases.Add(((nint)address, info.ByteLength));
                return;
            }
        }
        PageAdvice.ReleaseWholePages(address, info.ByteLength);
    }

    /// <summary>Stops the background population (a step in progress finishes first) and waits for it.</summary>
    public void StopPopulating()
    {
        _stopPopulating = true;
        _populating?.Join();
    }

    private void Add(SafetensorsFile file)
    {
        _files.Add(file);
        foreach (var name in file.Tensors.Keys) _byTensor[name] = file;
    }

    public bool Contains(string name) => _byTensor.ContainsKey(name);

    public (SafetensorsFile File, TensorInfo Info) Get(string name)
    {
        if (!_byTensor.TryGetValue(name, out var file))
            throw new ModelLoadException($"tensor '{name}' is missing from the checkpoint ({string.Join(", ", _files.Select(f => Path.GetFileName(f.Path)))}); the weights do not match the architecture in config.json.");
        return (file, file.Tensors[name]);
    }

    public void Dispose()
    {
        StopPopulating();
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
