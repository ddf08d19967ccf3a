package gen

import "fmt"

// dockerNet is one Docker bridge network and its containers' published
// ports.
type dockerNet struct {
	bridge, subnet string
	published      []dockerPort
}

type dockerPort struct {
	container, proto string
	hostPort, port   int
}

// dockerNets: the default bridge and one user-defined network (br-<id>), in
// Docker's order (the newest network's rules are inserted above the older).
func dockerNets() []dockerNet {
	return []dockerNet{
		{bridge: "br-5f0c2a9e41d7", subnet: "198.18.225.0/24", published: []dockerPort{
			{"198.18.225.2", "tcp", 15432, 5432},
			{"198.18.225.3", "tcp", 16379, 6379},
		}},
		{bridge: "docker0", subnet: "198.18.224.0/24", published: []dockerPort{
			{"198.18.224.2", "tcp", 18080, 80},
			{"198.18.224.3", "tcp", 19090, 9090},
			{"198.18.224.4", "udp", 15353, 53},
			{"198.18.224.5", "tcp", 12222, 22},
		}},
	}
}

// docker writes dockerd's rules (20.10 to 27 layout): the DOCKER chains,
// inter-network isolation, published ports, and the FORWARD policy DROP that
// Docker sets and that other owners must balance with their own ACCEPTs.
func docker(ipt *iptables) {
	ipt.setPolicy("filter", "FORWARD", "DROP")
	ipt.chain("filter", "DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2", "DOCKER-USER")
	ipt.chain("nat", "DOCKER")
	nets := dockerNets()

	ipt.add("nat", "PREROUTING", 5, "-m addrtype --dst-type LOCAL -j DOCKER")
	ipt.add("nat", "OUTPUT", 3, "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER")
	for _, n := range nets {
		ipt.add("nat", "POSTROUTING", 3, "-s", n.subnet, "! -o", n.bridge, "-j MASQUERADE")
	}
	for _, n := range nets {
		for _, p := range n.published {
			// Hairpin: a container reaching its own published port.
			ipt.add("nat", "POSTROUTING", 0, fmt.Sprintf("-s %s/32 -d %s/32 -p %s -m %s --dport %d -j MASQUERADE",
				p.container, p.container, p.proto, p.proto, p.port))
		}
	}
	for _, n := range nets {
		ipt.add("nat", "DOCKER", 1, "-i", n.bridge, "-j RETURN")
	}
	for _, n := range nets {
		for _, p := range n.published {
			ipt.add("nat", "DOCKER", 2, fmt.Sprintf("! -i %s -p %s -m %s --dport %d -j DNAT --to-destination %s:%d",
				n.bridge, p.proto, p.proto, p.hostPort, p.container, p.port))
		}
	}

	ipt.add("filter", "FORWARD", 6, "-j DOCKER-USER")
	ipt.add("filter", "FORWARD", 6, "-j DOCKER-ISOLATION-STAGE-1")
	for _, n := range nets {
		ipt.add("filter", "FORWARD", 3, "-o", n.bridge, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
		ipt.add("filter", "FORWARD", 2, "-o", n.bridge, "-j DOCKER")
		ipt.add("filter", "FORWARD", 3, "-i", n.bridge, "! -o", n.bridge, "-j ACCEPT")
		ipt.add("filter", "FORWARD", 1, "-i", n.bridge, "-o", n.bridge, "-j ACCEPT")
	}
	for _, n := range nets {
		for _, p := range n.published {
			ipt.add("filter", "DOCKER", 1, fmt.Sprintf("-d %s/32 ! -i %s -o %s -p %s -m %s --dport %d -j ACCEPT",
				p.container, n.bridge, n.bridge, p.proto, p.proto, p.port))
		}
	}
	for _, n := range nets {
		ipt.add("filter", "DOCKER-ISOLATION-STAGE-1", 3, "-i", n.bridge, "! -o", n.bridge, "-j DOCKER-ISOLATION-STAGE-2")
	}
	ipt.add("filter", "DOCKER-ISOLATION-STAGE-1", 6, "-j RETURN")
	for _, n := range nets {
		// Traffic from one Docker network into another: the interface-scoped
		// DROP a tracer must not apply to anything that is not on a Docker
		// bridge.
		ipt.add("filter", "DOCKER-ISOLATION-STAGE-2", 0, "-o", n.bridge, "-j DROP")
	}
	ipt.add("filter", "DOCKER-ISOLATION-STAGE-2", 3, "-j RETURN")
	ipt.add("filter", "DOCKER-USER", 6, "-j RETURN")
}
