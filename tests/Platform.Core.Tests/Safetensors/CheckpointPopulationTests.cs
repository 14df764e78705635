// ModelWeights.StartPopulating maps a checkpoint's pages into the process ahead of the first
// forward pass (MADV_POPULATE_READ on the engine's own map, on a background thread): after it,
// the map of the file is resident in full without a read; stopping it is prompt and safe to
// follow with Dispose; a range released while it runs (ReleasePages, for a tensor the loader
// copied) is released when it ends, so the population cannot map it again.
using System.Text;
using Platform.Core.Safetensors;
using Platform.Testing;

namespace Platform.Core.Tests.Safetensors;

public sealed class CheckpointPopulationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("populate-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A single-tensor model.safetensors of <paramref name="floats"/> float32 values.</summary>
    private string WriteCheckpoint(int floats)
    {
        string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[" + floats + "],\"data_offsets\":[0," + (long)floats * 4 + "]}}";
        header = header.PadRight((header.Length + 7) / 8 * 8);
        string path = Path.Combine(_dir, "model.safetensors");
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((long)header.Length));
        stream.Write(Encoding.ASCII.GetBytes(header));
        var data = new byte[(long)floats * 4];
        new Random(5).NextBytes(data);
        stream.Write(data);
        return path;
    }

    [Fact]
    public async Task Populating_maps_the_whole_checkpoint_into_the_process_without_reading_it()
    {
        if (!OperatingSystem.IsLinux()) return;
        string path = WriteCheckpoint(20 << 20); // 80 MB: three 32 MB steps
        long length = new FileInfo(path).Length;
        using var files = ModelWeights.Open(_dir);
        long before = MappedFiles.ResidentBytes(path);
        Assert.True(before < length / 4, $"{before} bytes of the map resident before populating (the header read only should be)");

        files.StartPopulating();
        Assert.True(await files.Populated.WaitAsync(TimeSpan.FromSeconds(60)), "population ended early: the kernel lacks MADV_POPULATE_READ (5.14+)?");
        long after = MappedFiles.ResidentBytes(path);
        Assert.True(after >= length - Environment.SystemPageSize, $"{after} of {length} bytes of the map resident after populating");
    }

    [Fact]
    public async Task A_stopped_population_maps_nothing_more_and_dispose_after_it_is_safe()
    {
        if (!OperatingSystem.IsLinux()) return;
        string path = WriteCheckpoint(32 << 20); // 128 MB: four steps
        long length = new FileInfo(path).Length;
        var files = ModelWeights.Open(_dir);
        // Stopped before it starts (as a load that must copy does): the thread sees the stop before its first step.
        files.StopPopulating();
        files.StartPopulating();
        Assert.False(await files.Populated.WaitAsync(TimeSpan.FromSeconds(60)), "a stopped population reported every page mapped");
        Assert.True(MappedFiles.ResidentBytes(path) < length / 4, "a stopped population still mapped the checkpoint");
        files.StopPopulating();
        files.Dispose();
        Assert.Equal(0, MappedFiles.ResidentBytes(path));
    }
    [Fact]
    public async Task A_release_asked_for_while_populating_happens_after_the_population_and_sticks()
    {
        if (!OperatingSystem.IsLinux()) return;
        string path = WriteCheckpoint(64 << 20); // 256 MB: eight steps
        long length = new FileInfo(path).Length;
        using var files = ModelWeights.Open(_dir);
        var (file, info) = files.Get("w");
        files.ReleasePages(file, info); // nothing mapped yet; compiles the call, so the one below comes at once
        files.StartPopulating();
        // Asked for while the population runs (it is marked running before its thread starts): released at once,
        // the population would map the whole tensor again behind it.
        files.ReleasePages(file, info);
        Assert.True(await files.Populated.WaitAsync(TimeSpan.FromSeconds(60)), "population ended early: the kernel lacks MADV_POPULATE_READ (5.14+)?");
        long resident = MappedFiles.ResidentBytes(path);
        // The header's page and the partial pages at the tensor's ends may stay.
        Assert.True(resident <= 3L * Environment.SystemPageSize, $"{resident} of {length} bytes of the map resident after the release");
    }
}
