// ModelWeights.StartPopulating maps a checkpoint's pages into the process ahead of the first
// forward pass (MADV_POPULATE_READ on the engine's own map, on a background thread): after it,
// the map of the file is resident in full without a read; stopping it is prompt and safe to
// follow with Dispose.
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
}
