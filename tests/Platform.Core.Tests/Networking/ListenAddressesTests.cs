// A pod-IP host is served on loopback too (kubectl port-forward connects there); loopback hosts
// (a test kubelet's 127.0.0.x) and the wildcard are served as given, so pods never collide.
using System.Net;
using Platform.Core.Networking;

namespace Platform.Core.Tests.Networking;

public sealed class ListenAddressesTests
{
    [Theory]
    [InlineData("10.244.1.7", "10.244.1.7,127.0.0.1")]
    [InlineData("127.0.0.12", "127.0.0.12")]
    [InlineData("127.0.0.1", "127.0.0.1")]
    [InlineData("0.0.0.0", "0.0.0.0")]
    [InlineData("fd00::5", "fd00::5,::1")]
    public void A_specific_address_is_also_served_on_loopback(string host, string expected) =>
        Assert.Equal(expected, string.Join(',', ListenAddresses.For(IPAddress.Parse(host))));
}
